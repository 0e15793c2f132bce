from loadtest.extra import needs_extra

try:
    from loadtest.cli import main
except ModuleNotFoundError as exc:
    raise SystemExit(needs_extra(exc, "python -m loadtest")) from None

raise SystemExit(main())
