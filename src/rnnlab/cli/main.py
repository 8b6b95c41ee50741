"""The ``rnnlab`` command. Each area adds its commands in its own module (``rnnlab.cli.<area>``)
with a ``register(app, train_app)`` function, listed in ``_AREAS``; a missing module is skipped."""

from __future__ import annotations

import importlib
import sys

import typer

from rnnlab.errors import RnnlabError

app = typer.Typer(
    name="rnnlab",
    help="Recurrent networks (RNN, LSTM, GRU) from their equations: train, compare, explain, ship.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train a model for a task into a run folder.", no_args_is_help=True)
app.add_typer(train_app, name="train")

_AREAS = ["info", "train", "demo", "lm", "classify", "forecast", "bench", "export", "seq2seq"]
_DEBUG = False


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    global _DEBUG
    _DEBUG = debug


for _area in _AREAS:
    try:
        _module = importlib.import_module(f"rnnlab.cli.{_area}")
    except ModuleNotFoundError as exc:
        if exc.name != f"rnnlab.cli.{_area}":
            raise
        continue
    _module.register(app, train_app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: rnnlab's own errors become one line on stderr and exit status 2."""
    try:
        app(args=argv, standalone_mode=False)
    except RnnlabError as exc:
        if _DEBUG or "--debug" in (argv if argv is not None else sys.argv):
            raise
        print(f"rnnlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # click's usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
