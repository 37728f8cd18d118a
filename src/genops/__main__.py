from genops.cli import main

raise SystemExit(main())
