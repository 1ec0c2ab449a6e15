"""`python -m gateway` is the same as the `tracegate` command."""

from gateway.cli import main

raise SystemExit(main())
