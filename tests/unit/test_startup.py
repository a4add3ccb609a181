"""Which arguments start-up takes out of argv before re-executing (cli/startup.py)."""

from __future__ import annotations

import pytest

from reconciler.cli.startup import scrub_identity_args


@pytest.mark.parametrize(
    "argv, kept, path",
    [
        (["--once", "--identity", "k.txt"], ["--once"], "k.txt"),
        (["--identity=k.txt", "validate"], ["validate"], "k.txt"),
        (["vault", "get", "ops", "X", "--ident", "k.txt"], ["vault", "get", "ops", "X"], "k.txt"),
        (["--identity", "a", "plan", "--identity", "b"], ["plan"], "b"),  # argparse: the last wins
        (["--inventory", "inv", "plan"], ["--inventory", "inv", "plan"], None),
        (["vault", "decrypt", "-i", "k.txt"], ["vault", "decrypt", "-i", "k.txt"], None),
        (
            ["vault", "decrypt", "--identity-file", "k"],
            ["vault", "decrypt", "--identity-file", "k"],
            None,
        ),
        (["--id", "x"], ["--id", "x"], None),  # ambiguous for argparse: left for it to refuse
        (["queue", "--", "--identity", "x"], ["queue", "--", "--identity", "x"], None),
    ],
)
def test_identity_flags_are_taken_out_and_nothing_else(argv, kept, path):
    assert scrub_identity_args(argv) == (kept, path)
