# docs/local.mk: the documentation that ships in the tarball.
EXTRA_DIST += docs/architecture.md
