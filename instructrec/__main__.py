from instructrec.cli import main

raise SystemExit(main())
