from pgtasks.cli import main

main()
