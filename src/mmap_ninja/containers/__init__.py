"""Maps made of other maps and what works on any map: sharded maps and `merge`, `blend`, training orders (`Order`,
`BlockOrder`), `open_existing` and `upload`, `verify`. Imports only `kinds` and `storage`. (ARCHITECTURE.md,
"Layers as folders")"""
