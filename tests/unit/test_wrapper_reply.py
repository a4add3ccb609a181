"""The wrapper's reply trailer (`NONCE CODE`), parsed without a machine."""

from reconciler.adapters.transport.wrapper import acknowledgement, parse_reply

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
    assert parse_reply(f"{'f' * 32} 0\n".encode(), NONCE) is None  # another run's nonce


def test_the_acknowledgement_is_the_nonce_on_a_line():
    assert acknowledgement(NONCE) == f"{NONCE}\n".encode()
