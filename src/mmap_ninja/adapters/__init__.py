"""Bridges to optional libraries: `mmap_ninja.adapters.torch` (PyTorch) and `mmap_ninja.adapters.arrow`
(Apache Arrow and Hugging Face ``datasets``). Each imports its library when it is imported itself;
``import mmap_ninja`` imports neither."""
