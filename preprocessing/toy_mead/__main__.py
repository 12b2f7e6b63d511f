"""Generate the toy MEAD dataset: `python -m preprocessing.toy_mead --out data/toy_mead`.

Defaults give the embedded default set: 2 actors x 7 emotions x 10 sentences at 256x256, 30 fps.
Re-running with the same options on a complete set does nothing; on a partial set it finishes the
missing clips; with other options it refuses (use another --out, or --force to regenerate).
"""

from __future__ import annotations

from common.cli import parse_cli
from common.errors import cli_entry
from preprocessing.toy_mead.build import ToyMeadConfig, build_toy_mead


@cli_entry
def main(argv: list[str] | None = None) -> None:
    build_toy_mead(parse_cli(ToyMeadConfig, argv, prog="python -m preprocessing.toy_mead", doc=__doc__))


if __name__ == "__main__":
    main()
