// Package packaging holds the Debian package of schedsync, built by
// `make package` with nfpm: the nfpm configuration and its pinned module
// (nfpm/, a separate Go module), the maintainer scripts (postinst, prerm,
// postrm) and deb-version, which turns `git describe` into a Debian version.
// It has no Go code; its tests build the package, install it with dpkg and
// purge it.
package packaging
