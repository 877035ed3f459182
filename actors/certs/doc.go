// Package certs is ketch's development certificate authority and the
// certificate plumbing of its mutual TLS (issue 15): it writes a CA, node
// certificates and client certificates into one directory, as
// `cockroach cert` does, and gives the TLS layer what it needs to load them,
// to reload them when they are rotated, and to read the identity a verified
// peer certificate names.
//
// # Files
//
// In one directory DIR (`ketch certs ... --dir DIR`):
//
//	ca.crt, ca.key                    InitCA: a self-signed ECDSA P-256 CA, valid 10 years
//	node-ID.crt, node-ID.key          NewNodeCert: server and client auth, valid 1 year
//	client-NAME.crt, client-NAME.key  NewClientCert: client auth only, valid 1 year
//
// Certificates are PEM "CERTIFICATE" blocks, mode 0644; keys are PKCS #8
// PEM "PRIVATE KEY" blocks, mode 0600. InitCA creates DIR with mode 0700 if
// it is missing (an existing DIR keeps its mode).
//
// # Identities
//
// A certificate's identity is its one URI SAN of scheme ketch:
//
//	ketch://CLUSTER/node/ID   node ID (decimal, > 0) of cluster CLUSTER
//	ketch://client/NAME       the client NAME, of any cluster the CA serves
//
// CLUSTER is the URI's host, so a cluster id that goes into a certificate
// must be a valid host name as Go's crypto/x509 parses one: at most 64
// bytes of letters, digits, '-' and '_', in non-empty parts of at most 63
// bytes separated by single dots (see ValidateClusterID). Such an id needs
// no escaping, so the URI is the cluster id verbatim and compares exactly
// (case matters, as it does for ketch's cluster ids). The two forms cannot
// be mistaken for each other: a node's path has two segments, a client's
// one, even in a cluster named "client". The common name ("node ID", or
// NAME) is for people only; the TLS layer must decide by the URI
// (ParseIdentity), never by the common name.
//
// A node certificate carries exactly the DNS names and IP addresses it was
// given: "localhost" and 127.0.0.1 are never added implicitly, so a node
// reached over loopback must list them.
//
// # Rotation
//
// A Reloader serves a certificate and key pair from files (for
// tls.Config.GetCertificate and GetClientCertificate), and a PoolReloader
// a CA pool; both stat their files at most once per second on use and reread
// them when their modification time, size or identity (a rename over them)
// changed. So rewriting the files (`ketch certs node ... --overwrite`, or a
// secret update) reaches new connections without a restart; existing
// connections keep the certificate they were made with. A reread that
// fails (a half-written pair, a key that does not match) keeps serving the
// last good pair and logs one warning until the files change again.
//
// # What it must never do
//
//   - Never write a private key readable by anyone but its owner: a key file
//     is created 0600 (and chmod-ed to 0600 when replaced).
//   - Never overwrite an existing file silently: without the Overwrite
//     option, InitCA, NewNodeCert and NewClientCert refuse, naming the file,
//     before writing anything; with it, a file is replaced by an atomic
//     rename, so a reader sees the old file or the new one, never half of one.
//   - Never leave half a pair: if the second file of a pair cannot be
//     written, the first, newly created one is removed.
//   - Never issue a certificate that outlives its CA, or whose identity
//     ParseIdentity would not read back exactly.
//   - Never treat a certificate as trusted: ParseIdentity only reads a name;
//     the chain must have been verified (by crypto/tls against the CA pool)
//     before the name means anything.
//
// The CA is for development and tests: its key sits unencrypted beside the
// certificates. Production deployments should bring their own CA and only
// follow the identity format above.
package certs
