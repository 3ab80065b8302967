"""Samples to column bytes and back: the `Layout` / `View` base classes, the container protocol every kind's class is
built on (`maps.MapBase`), the registries of field kinds and codecs, the casting rule, and one module (or a few)
per kind: strings, ragged, numpy, images, records; 0.9.0's maps read-only (`legacy`). Imports only `storage` (and
`errors`). (ARCHITECTURE.md, "Layers as folders")"""
