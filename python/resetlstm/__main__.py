"""``python -m resetlstm``: the demo (see resetlstm/demo.py and ``python -m resetlstm --help``)."""
from resetlstm.demo import main

if __name__ == "__main__":
    main()
