"""How every jaxcls command starts and fails: `cli.run(main)` in place of absl's `app.run(main)`.

A user error prints one line on stderr, `error: ...`, and exits with status 2; the traceback
is printed too with `--verbose` or `JAXCLS_TRACEBACK=1`. User errors are
- anything raised while the flags are parsed: an unknown config key (with ml_collections'
  "did you mean"), a value of the wrong type, a config file that does not exist or fails;
- absl's UsageError (a missing argument) and FileNotFoundError / NotADirectoryError (they
  name the path);
- ValueError, KeyError, TypeError and OSError raised on purpose by a `raise` in jaxcls's own
  code, whose messages name the key, path or value.
Anything else is a bug and keeps its traceback. JAX's note that it found no TPU ("Unable to
initialize backend 'tpu'") is dropped on machines without TPU chips.
"""

import linecache
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable

from absl import app, flags

from jaxcls import distributed

ENV_TRACEBACK = "JAXCLS_TRACEBACK"
EXIT_USER_ERROR = 2
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_RAISED_ON_PURPOSE = (ValueError, KeyError, TypeError, OSError)
_ANYWHERE = (FileNotFoundError, NotADirectoryError)


class _FlagError(Exception):
    """An error while parsing the command line, with the argument it came from."""


class _NoTpuProbe(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unable to initialize backend 'tpu'")


def silence_tpu_probe() -> None:
    """Drops JAX's 'Unable to initialize backend tpu' log line where there are no TPU chips."""
    if not distributed._on_tpu_vm():  # libtpu and TPU chips
        logging.getLogger("jax._src.xla_bridge").addFilter(_NoTpuProbe())


def _lines(error: BaseException) -> list[str]:
    """The error's text as stripped lines (KeyError's and AttributeError's quotes dropped)."""
    while len(error.args) == 1 and isinstance(error.args[0], BaseException):
        error = error.args[0]  # ml_collections: AttributeError(KeyError(text))
    text = str(error.args[0] if isinstance(error, KeyError) and len(error.args) == 1 else error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(error, (KeyError, AttributeError)):
        lines = [line.strip("'\"") for line in lines]
    return lines


def message(error: BaseException) -> str:
    """The error's text on one line (lines joined by '; '); an OSError's path included."""
    text = "; ".join(_lines(error)) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename!r}"
    return text


def _raised_by_jaxcls(error: BaseException) -> bool:
    """Whether the innermost frame is a `raise` statement in jaxcls's own files."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = os.path.abspath(tb.tb_frame.f_code.co_filename)
    if not path.startswith(_PACKAGE + os.sep):
        return False
    return linecache.getline(path, tb.tb_lineno).lstrip().startswith("raise")


def is_user_error(error: BaseException) -> bool:
    """See the module docstring."""
    if isinstance(error, (_FlagError, app.UsageError, flags.Error, *_ANYWHERE)):
        return True
    return isinstance(error, _RAISED_ON_PURPOSE) and _raised_by_jaxcls(error)


def _unknown_key(argv: list[str], error: BaseException) -> str:
    """'--config.KEY=V: unknown config key 'KEY'; Did you mean ...' for ml_collections' error."""
    key, *hints = _lines(error) or ["?"]
    arg = next((a for a in argv[1:] if re.match(rf"--\w+(\.\w+)*\.{re.escape(key)}(=|$)", a)),
               None)
    return "; ".join([f"{arg + ': ' if arg else ''}unknown config key {key!r}", *hints])


def _parse(argv: list[str]) -> list[str]:
    """absl's flag parsing, every failure a _FlagError naming the argument."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        lines = _lines(e)
        if any("Error whilst parsing config file" in line for line in lines):
            lines = [lines[0].split(":")[0], lines[-1]]  # 'flag --config=F', the error
        raise _FlagError("; ".join(lines)) from e
    except (AttributeError, KeyError) as e:  # ml_collections: a key the config lacks
        raise _FlagError(_unknown_key(argv, e)) from e
    except Exception as e:  # config files run user code: anything they raise is theirs
        files = [a for a in argv[1:] if a.startswith("--") and a.partition("=")[2].partition(
            ":")[0].endswith(".py")]
        raise _FlagError(f"{' '.join(files) + ': ' if files else ''}{type(e).__name__}: "
                         f"{message(e)}") from e
    for name in flags.FLAGS:
        error = getattr(flags.FLAGS[name].value, "_error", None)  # config_flags defers it
        if isinstance(error, Exception):
            raise _FlagError(f"--{name}: {_lines(error)[-1]}") from error
    return rest


def _verbose(argv: list[str]) -> bool:
    if os.environ.get(ENV_TRACEBACK, "") not in ("", "0"):
        return True
    return any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in argv[1:])


flags.DEFINE_bool("verbose", False, f"On an error, print the traceback too (or set "
                  f"{ENV_TRACEBACK}=1).")


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Parses the flags, runs `main(argv)` and exits; user errors as one `error:` line."""
    argv = list(sys.argv if argv is None else argv)
    silence_tpu_probe()

    def main_raising_usage(args: list[str]):
        try:
            return main(args)
        except app.UsageError as e:  # absl would print the whole help text
            raise _FlagError(f"{message(e)} (--help lists the flags)") from e

    try:
        app.run(main_raising_usage, argv=argv, flags_parser=_parse)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:
        if not is_user_error(e):
            raise
        if _verbose(argv):
            traceback.print_exc()
        print(f"error: {message(e)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
