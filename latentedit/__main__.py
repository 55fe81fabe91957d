"""`python -m latentedit ...` and `torchrun -m latentedit ...`: the command line, without needing the
console script's path (a pyenv / conda shim is a shell script that torchrun cannot run)."""
from latentedit.cli import main

if __name__ == "__main__":
    main()
