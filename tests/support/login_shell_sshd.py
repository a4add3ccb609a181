"""An sshd whose sessions run their command with another login shell (zsh, mksh, dash), and
optionally a PATH without bash: how a target's login shell and startup files reach the SSH
transport's wrapper and runners."""

from __future__ import annotations

from pathlib import Path

from tests.support.sshd import Sshd


class LoginShellSshd(Sshd):
    """A daemon whose sessions run their command with `shell` as the login shell would
    (`ForceCommand exec SHELL -c "$SSH_ORIGINAL_COMMAND"`), HOME holding `bashrc`; with
    `bash=False` its sessions' PATH finds every program of /usr/bin but bash."""

    def __init__(
        self, root: Path, authorized: list[str], shell: str, bashrc: str = "", bash: bool = True
    ):
        self.shell, self.bashrc, self.bash = shell, bashrc, bash
        super().__init__(root, authorized)

    def _write_config(self) -> None:
        super()._write_config()
        with open(self.config, "a") as config:
            config.write(f'ForceCommand exec {self.shell} -c "$SSH_ORIGINAL_COMMAND"\n')
        (self.root / "home" / ".bashrc").write_text(self.bashrc)
        if not self.bash:
            bin_dir = self.root / "bin"
            bin_dir.mkdir(exist_ok=True)
            for program in Path("/usr/bin").iterdir():
                if program.name != "bash" and not (bin_dir / program.name).exists():
                    (bin_dir / program.name).symlink_to(program)
            text = self.config.read_text().replace("SetEnv HOME=", f"SetEnv PATH={bin_dir} HOME=")
            self.config.write_text(text)
