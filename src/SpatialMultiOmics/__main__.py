"""``python -m SpatialMultiOmics --tx ... --prot ...``: the seed's command line, verbatim (runs ``run``)."""

from spatialmultiomics.cli import main

if __name__ == "__main__":
    main(prog_name="python -m SpatialMultiOmics", default_command="run")
