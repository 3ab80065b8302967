"""Whole-map tools: `convert` and the `mmap-ninja` command line. Import the layers below; adapters only inside
functions. (ARCHITECTURE.md, "Layers as folders")"""
