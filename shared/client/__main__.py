from shared.client.console import main

raise SystemExit(main())
