from metahub.cli import main

main()
