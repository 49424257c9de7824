"""`python -m p2gmed` is the `p2g` command (so `torchrun ... -m p2gmed pretrain ...` works)."""

from p2gmed.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
