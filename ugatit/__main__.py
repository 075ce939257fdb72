"""``python -m ugatit``: checkpoint utilities (export, init, info)."""

from ugatit.cli import main

if __name__ == "__main__":
    main()
