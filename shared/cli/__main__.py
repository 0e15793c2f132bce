from shared.cli.command import main

raise SystemExit(main())
