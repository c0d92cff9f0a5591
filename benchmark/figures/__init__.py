"""The paper's figures, drawn only from saved artefacts (predictions, table, embeddings,
alignment maps, ledgers): drawing a figure never trains or evaluates anything.

One module per figure family; ``names`` says which files each family writes (the
workflow declares the same names), ``style`` holds the shared look: sizes for a paper's
column, font sizes, the colour-blind-safe palette.
"""
