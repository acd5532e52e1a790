from yarn_cli.cli.app import main

main()
