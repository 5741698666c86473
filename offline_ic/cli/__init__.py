"""The ``offline-ic`` command line: thin commands over the library, errors mapped to exit codes.

Exit codes: 0 success/pass, 1 check failed, 2 usage or input error, 3 refused for safety.
Each command family lives in its own module and registers itself on the group; heavy
imports happen inside the commands so that ``--help`` and small jobs start fast.
"""

from __future__ import annotations

import errno
import importlib
import os
import select
import signal
import sys

import click

from offline_ic import __version__
from offline_ic.cli.common import emit_json
from offline_ic.errors import CheckFailed, OfflineICError
from offline_ic.escaping import terminal

# Each top-level command -> the module that registers it (``register(group)``). A module is
# imported when one of its commands runs, or when the commands are listed (--help), so a
# command does not pay for importing the others (tests/cli/test_lazy_commands.py keeps this
# table equal to what the modules register).
COMMAND_MODULES = {
    "services": "windows_cmds",
    "kvp": "windows_cmds",
    "apply": "windows_cmds",
    "inspect": "windows_cmds",
    "snapshot": "image_cmds",
    "verify": "image_cmds",
    "recover": "image_cmds",
    "convert": "convert_cmd",
    "merge": "chain_cmds",
    "reparent": "chain_cmds",
    "resize": "disk_cmds",
    "compact": "disk_cmds",
    "hive": "hive_cmds",
    "reg": "reg_cmds",
    "check": "check_cmd",
    "fix": "fix_cmd",
    **dict.fromkeys(("ls", "cat", "cp", "mount"), "browse_cmds"),
}


class LazyGroup(click.Group):
    """A click group whose commands are registered by their modules on first use."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def _load(self, module: str) -> None:
        if module not in self._loaded:
            self._loaded.add(module)
            importlib.import_module(f"offline_ic.cli.{module}").register(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None:
            self._load(module)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in dict.fromkeys(COMMAND_MODULES.values()):
            self._load(module)
        return super().list_commands(ctx)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in COMMAND_MODULES:
            # a mistyped command: load every command so that click's "Did you mean" sees them
            self.list_commands(ctx)
        return super().resolve_command(ctx, args)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="offline-ic")
def cli() -> None:
    """Inspect and service the Hyper-V integration services of a stopped VM's disk.

    IMAGE is a .vhdx, .avhdx, .vhd or raw disk image (a differencing disk's parents are
    found through its parent locator), a directory that is a mounted guest root (E:\\),
    or a bare registry hive file.

    \b
    Exit codes: 0 success/pass, 1 check failed, 2 usage or input error,
                3 refused for safety (nothing written).

    \b
    Examples:
      offline-ic services list win10.vhdx
      offline-ic check golden/*.vhdx --json
      offline-ic services set win10.vhdx all=manual --output serviced.avhdx
    """


def _os_error_line(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        # no claim about the files here: only the write path, which reads back, may make one
        reason = "no space left on device"
    return f"{where}{reason}"


def _click_error_line(exc: click.ClickException) -> str:
    """click's usage errors as one line, the --help hint on the same line."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        return f"{message} (see '{ctx.command_path} --help')"
    return message


def _wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for JSON (``--json`` before any ``--``)."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in words


def _fail(line: str, code: int, kind: str, as_json: bool, image: str | None = None) -> None:
    """The one stderr line; with --json also the error document on stdout; then exit
    ``code``. An error about the file a command was given (``image``) is the record a fleet
    prints for a failed target: ``{"image", "error"}``, the message naming the image."""
    document: dict[str, object] = {}
    if image is not None:
        from offline_ic.fleet import naming

        line = naming(image, line)
        document["image"] = image
    document["error"] = {"code": code, "kind": kind, "message": line}
    if as_json:
        emit_json(document)
    click.echo(f"offline-ic: error: {terminal(line)}", err=True)
    sys.exit(code)


def _target_of(args: list[str]) -> str | None:
    """The file the command line is about: the first argument of the command that runs,
    when it takes one file (``reg get IMAGE``, ``hive get HIVE``, ``convert SRC``,
    ``snapshot PARENT``); None for many-target commands (their targets' errors are records
    of their own, an error before any target runs names none) and for a line that does
    not parse. Read with click's parser only: no callback or type check runs again."""
    ctx = click.Context(cli, info_name="offline-ic", resilient_parsing=True)
    command: click.Command = cli
    words = list(args)
    try:
        while True:
            values, rest, _order = command.make_parser(ctx).parse_args(args=words)
            if not isinstance(command, click.Group):
                break
            sub = command.get_command(ctx, rest[0]) if rest else None
            if sub is None:
                return None
            ctx = click.Context(sub, parent=ctx, info_name=rest[0], resilient_parsing=True)
            command, words = sub, rest[1:]
    except click.ClickException:
        return None
    first = next((p for p in command.params if isinstance(p, click.Argument)), None)
    if first is None or first.name is None or first.nargs != 1:
        return None
    value = values.get(first.name)
    return value if isinstance(value, str) else None


def _stdout_reader_gone() -> bool:
    """Whether nobody reads our stdout any more (``| head -1`` has exited): poll reports
    POLLERR on a pipe's write end whose read end is closed. An EPIPE from any other pipe
    (a helper tool's, the fleet's own to its workers) is an error like any other."""
    try:
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        return any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _exit_like_a_pipe_writer() -> None:
    """End as coreutils do when their reader goes away: killed by SIGPIPE (the shell shows
    141), no message, no traceback. What is still buffered for stdout goes to /dev/null, so
    that the interpreter's last flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(128 + signal.SIGPIPE)  # not reached unless SIGPIPE is blocked


def _flush_stdout() -> None:
    """Flush stdout now, while a closed pipe can still be told apart from an error."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        if exc.errno == errno.EPIPE and _stdout_reader_gone():
            _exit_like_a_pipe_writer()
        raise


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the group and turn errors into one line and an exit
    code; a reader of stdout that went away ends the run as SIGPIPE, never as exit 1."""
    try:
        _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        _flush_stdout()


def _silence_library_logs() -> None:
    """dissect logs what it meets in a damaged file system ("Zero-length directory entry in
    <inode 13>") through Python's logging, which prints on stderr when nothing is configured:
    lines outside the one-line error contract, built from guest data. Our own messages say
    what a command could not read; the libraries' logs go nowhere."""
    import logging

    logging.getLogger().addHandler(logging.NullHandler())


def _main(args: list[str]) -> None:
    as_json = _wants_json(args)
    from offline_ic.allocator import keep_freed_buffers
    from offline_ic.inputs import command_scope

    keep_freed_buffers()  # gigabytes are streamed in pieces of megabytes
    _silence_library_logs()

    try:
        with command_scope():  # outputs are checked against what THIS command reads
            # not cli.main(): it turns every EPIPE into exit 1, which means "check failed"
            with cli.make_context("offline-ic", args) as ctx:
                try:
                    cli.invoke(ctx)
                except (EOFError, KeyboardInterrupt) as exc:  # as click.Command.main does
                    click.echo(err=True)  # off the line the terminal's ^C is on
                    raise click.exceptions.Abort() from exc
            _flush_stdout()
    except CheckFailed as exc:  # the report is already printed (its JSON says what failed)
        _fail(str(exc), exc.exit_code, exc.kind, as_json=False)
    except OfflineICError as exc:
        _fail(str(exc), exc.exit_code, exc.kind, as_json, _target_of(args))
    except click.exceptions.Exit as exc:  # --help, --version
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("offline-ic: aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        # a group without its command: the help as --help lays it out (not flattened into
        # one error line), on stderr, and the usage exit code
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _fail(_click_error_line(exc), exc.exit_code, "usage", as_json)
    except OSError as exc:
        if exc.errno == errno.EPIPE and _stdout_reader_gone():
            _exit_like_a_pipe_writer()
        _fail(_os_error_line(exc), 2, "os_error", as_json, _target_of(args))
    except KeyboardInterrupt:
        click.echo("offline-ic: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
