"""``python -m resetlstm``: the demo (see resetlstm/demo.py and ``python -m resetlstm --help``);
``python -m resetlstm serve-demo``: streaming generation through slots (resetlstm/serve_demo.py)."""
import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["serve-demo"]:
        from resetlstm.serve_demo import main

        main(sys.argv[2:])
    else:
        from resetlstm.demo import main

        main()
