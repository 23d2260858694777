// Package docs holds the project's documentation (the *.md files here and
// the repository's README.md) and the test that keeps its examples true:
// examples_test.go runs every `curl` example of those files, as written,
// against a real server with real jails, and compares each answer with the
// response the document shows. There is no runtime code here.
package docs
