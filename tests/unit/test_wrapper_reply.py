"""The wrapper's reply trailer (`TOKEN CODE`), parsed without a machine."""

from reconciler.adapters.transport.wrapper import acknowledgement, invocation, parse_reply

NONCE = "0123456789abcdef0123456789abcdef"


def test_a_reply_ending_with_its_trailer_gives_output_and_exit_code():
    assert parse_reply(f"line one\nline two\n{NONCE} 5\n".encode(), NONCE) == (
        b"line one\nline two\n",
        5,
    )


def test_output_without_a_final_newline_keeps_its_last_line():
    assert parse_reply(f"no newline{NONCE} 0\n".encode(), NONCE) == (b"no newline", 0)


def test_a_reply_without_its_trailer_is_not_complete():
    assert parse_reply(b"still running\n", NONCE) is None
    assert parse_reply(f"{NONCE} 5".encode(), NONCE) is None  # the line is not finished
    assert parse_reply(f"{NONCE} x\n".encode(), NONCE) is None
    assert parse_reply(f"{'f' * 32} 0\n".encode(), NONCE) is None  # another invocation's token


def test_the_acknowledgement_is_the_token_on_a_line():
    assert acknowledgement(NONCE) == f"{NONCE}\n".encode()


def test_the_token_is_on_stdin_only_and_is_not_the_nonce():
    """The nonce is the task's cookie and is in the argument list: the trailer's token must
    be neither, or a task printing its cookie and a number would end its own reply."""
    call = invocation("~/m", 7, "echo hi", {"A": "b"})
    assert call.token != call.nonce and len(call.token) == 32
    assert call.token not in call.command_line
    first, _, rest = call.stdin.partition(b"\n")
    assert first == b"# %d %s" % (len(rest), call.token.encode())
    assert call.token.encode() not in rest
