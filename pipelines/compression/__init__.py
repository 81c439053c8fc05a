"""Single-file compression: `.vqt` files (`vqt`) and prior fitting (`fit_prior`).

The entropy coding itself is core code (`vqtok.entropy`); this wing reads media and
checkpoints around it. Imports the data and jobs wings (media is cut as `vqtok encode` cuts it).
"""
