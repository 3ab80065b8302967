"""mmap_ninja's tests: a package, so that every test module, in any folder, imports the shared helpers the same way
(``from tests.support import snapshot``) and same-named test files in different folders cannot collide."""
