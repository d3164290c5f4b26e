from ttg.cli import main

main()
