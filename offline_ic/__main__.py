from offline_ic.cli import main

main()
