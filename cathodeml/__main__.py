"""`python -m cathodeml` runs the command line."""

from cathodeml.cli import main

if __name__ == "__main__":
    main()
