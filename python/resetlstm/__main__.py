"""``python -m resetlstm``: the demo (see resetlstm/demo.py and ``python -m resetlstm --help``);
``python -m resetlstm serve-demo``: streaming generation through slots (resetlstm/serve_demo.py).
Both run on TensorFlow (``pip install "resetlstm[tensorflow]"``)."""
import sys


def _run():
    try:
        if sys.argv[1:2] == ["serve-demo"]:
            from resetlstm.serve_demo import main

            return main(sys.argv[2:])
        from resetlstm.demo import main

        return main()
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] not in ("tensorflow", "keras"):
            raise
        sys.exit(f"python -m resetlstm: the demo runs on TensorFlow and Keras; {e.name} is not "
                 'installed. Install them with: pip install "resetlstm[tensorflow]"')


if __name__ == "__main__":
    _run()
