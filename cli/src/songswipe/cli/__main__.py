"""``songswipe``: the operator command line."""

from __future__ import annotations

from songswipe.cli.app import app


def main() -> None:
    app(prog_name="songswipe")


if __name__ == "__main__":
    main()
