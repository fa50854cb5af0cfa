"""Write (or check) the model card of a run folder from its own files.

python scripts/model_card.py                      # models/default/README.md
python scripts/model_card.py --model runs/NAME    # RUN/README.md
python scripts/model_card.py --check              # exit status 1 if the card is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from clothclf import __version__  # noqa: E402
from clothclf.evaluation.model_card import model_card  # noqa: E402
from clothclf.runs import write_text  # noqa: E402

CARD_NAME = "README.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PROJECT_ROOT / "models" / "default", help="run folder")
    parser.add_argument("--check", action="store_true", help="only check that the card is up to date")
    args = parser.parse_args(argv)
    shipped = args.model.resolve() == (PROJECT_ROOT / "models" / "default").resolve()
    title = "the shipped model" if shipped else f"`{args.model.name}`"
    card, path = model_card(args.model, __version__, title), args.model / CARD_NAME
    if args.check:
        current = path.read_text() if path.is_file() else ""
        print(
            f"{path}: {'up to date' if current == card else 'out of date: run python scripts/model_card.py'}"
        )
        return 0 if current == card else 1
    write_text(path, card)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
