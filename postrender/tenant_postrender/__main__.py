from tenant_postrender.cli import main

raise SystemExit(main())
