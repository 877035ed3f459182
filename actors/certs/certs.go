package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// File names in a certificate directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Defaults.
const (
	// DefaultCAValidity is how long a CA from InitCA is valid: 10 years
	// (of 365 days).
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultCertValidity is how long a node or client certificate is
	// valid: 1 year (of 365 days).
	DefaultCertValidity = 365 * 24 * time.Hour
	// ReloadInterval is how often a Reloader or PoolReloader stats its
	// files at most.
	ReloadInterval = time.Second

	// MaxClusterIDBytes and MaxNameBytes bound a cluster id and a client
	// name in a certificate.
	MaxClusterIDBytes = 64
	MaxNameBytes      = 64

	// backdate is subtracted from "now" for a certificate's NotBefore
	// (unless WithNotBefore gives it), so that a peer whose clock is a
	// little behind accepts a certificate issued a moment ago.
	backdate = time.Hour
)

// Identity kinds.
const (
	KindNode   = "node"
	KindClient = "client"
)

// Scheme is the URI scheme of a ketch identity.
const Scheme = "ketch"

// clientHost is the URI host of every client identity.
const clientHost = "client"

// Sentinel errors, for errors.Is.
var (
	// ErrExists: a file to be written exists and Overwrite was not given.
	ErrExists = errors.New("already exists")
	// ErrInvalid: an argument (cluster id, node id, host, name, option) is
	// not acceptable.
	ErrInvalid = errors.New("invalid")
	// ErrNoIdentity: a certificate does not carry exactly one well-formed
	// ketch identity.
	ErrNoIdentity = errors.New("no ketch identity")
)

// ------------------------------------------------------------------ options

// An Option changes how a certificate is issued.
type Option func(*options)

type options struct {
	validity  time.Duration
	notBefore time.Time
	overwrite bool
}

// WithValidity sets how long the certificate is valid, from its NotBefore
// (default DefaultCAValidity for InitCA, DefaultCertValidity otherwise). It
// must be positive.
func WithValidity(d time.Duration) Option { return func(o *options) { o.validity = d } }

// WithNotBefore sets the certificate's NotBefore (default: an hour ago, to
// allow for clock skew); NotAfter is then NotBefore plus the validity. Tests
// use it to make a certificate that has already expired.
func WithNotBefore(t time.Time) Option { return func(o *options) { o.notBefore = t } }

// Overwrite replaces existing files instead of refusing.
func Overwrite() Option { return func(o *options) { o.overwrite = true } }

func collect(defaultValidity time.Duration, opts []Option) (options, time.Time, time.Time, error) {
	o := options{validity: defaultValidity}
	for _, f := range opts {
		f(&o)
	}
	if o.validity <= 0 {
		return o, time.Time{}, time.Time{}, fmt.Errorf("validity %v %w: give a positive duration such as 8760h", o.validity, ErrInvalid)
	}
	now := time.Now()
	notBefore, notAfter := now.Add(-backdate), now.Add(o.validity)
	if !o.notBefore.IsZero() {
		notBefore, notAfter = o.notBefore, o.notBefore.Add(o.validity)
	}
	return o, notBefore.UTC().Truncate(time.Second), notAfter.UTC().Truncate(time.Second), nil
}

// -------------------------------------------------------------------- paths

// CAPaths returns the CA's certificate and key file in dir.
func CAPaths(dir string) (certFile, keyFile string) {
	return filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
}

// NodePaths returns node id's certificate and key file in dir.
func NodePaths(dir string, id uint64) (certFile, keyFile string) {
	base := filepath.Join(dir, "node-"+strconv.FormatUint(id, 10))
	return base + ".crt", base + ".key"
}

// ClientPaths returns client name's certificate and key file in dir.
func ClientPaths(dir, name string) (certFile, keyFile string) {
	base := filepath.Join(dir, "client-"+name)
	return base + ".crt", base + ".key"
}

// ----------------------------------------------------------------- issuing

// InitCA writes a new self-signed development CA to dir/ca.crt and
// dir/ca.key (ECDSA P-256, common name "ketch development CA", valid
// DefaultCAValidity), creating dir with mode 0700 if it is missing. It
// refuses, naming the file, if either file exists, unless Overwrite is
// given; replacing the CA invalidates every certificate it issued.
func InitCA(dir string, opts ...Option) error {
	o, notBefore, notAfter, err := collect(DefaultCAValidity, opts)
	if err != nil {
		return err
	}
	certFile, keyFile := CAPaths(dir)
	if !o.overwrite {
		if err := refuseExisting(certFile, keyFile); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create certificate directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ketch development CA", Organization: []string{"ketch"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaf certificates only.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	return writePair(certFile, keyFile, der, key, o.overwrite)
}

// NewNodeCert writes a certificate for node id of clusterID, signed by the
// CA in dir, to dir/node-ID.crt and dir/node-ID.key. It is valid for
// server and client authentication (nodes dial each other), carries the
// URI SAN NodeURI(clusterID, id), common name "node ID", and one DNS or IP
// SAN for each of hosts (an IP address goes to the IP SANs, anything else
// must be a DNS name; "localhost" and 127.0.0.1 are added only if listed).
// It refuses if either file exists, unless Overwrite is given, and refuses
// a certificate that would outlive the CA.
func NewNodeCert(dir, clusterID string, id uint64, hosts []string, opts ...Option) error {
	if err := ValidateClusterID(clusterID); err != nil {
		return err
	}
	if id == 0 {
		return fmt.Errorf("node id 0 is %w: give a positive node id", ErrInvalid)
	}
	if len(hosts) == 0 {
		return fmt.Errorf("no host given (%w): list every DNS name and IP address the node is reached by, such as node1.example.com,10.0.0.1,localhost,127.0.0.1", ErrInvalid)
	}
	var dns []string
	var ips []net.IP
	seen := map[string]bool{}
	for _, h := range hosts {
		ip, err := parseHost(h)
		if err != nil {
			return err
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	uri := &url.URL{Scheme: Scheme, Host: clusterID, Path: "/node/" + strconv.FormatUint(id, 10)}
	certFile, keyFile := NodePaths(dir, id)
	return issue(dir, certFile, keyFile, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "node " + strconv.FormatUint(id, 10)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{uri},
		DNSNames:    dns,
		IPAddresses: ips,
	}, Identity{Kind: KindNode, ClusterID: clusterID, NodeID: id}, opts)
}

// NewClientCert writes a client certificate for name, signed by the CA in
// dir, to dir/client-NAME.crt and dir/client-NAME.key: valid for client
// authentication only, with the URI SAN ClientURI(name) and common name
// NAME. A client identity names no cluster: it is good for every cluster
// whose nodes trust the CA. name is 1 to 64 of [A-Za-z0-9._-], not only
// dots. It refuses if either file exists, unless Overwrite is given.
func NewClientCert(dir, name string, opts ...Option) error {
	if err := validateName(name); err != nil {
		return err
	}
	certFile, keyFile := ClientPaths(dir, name)
	return issue(dir, certFile, keyFile, &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{{Scheme: Scheme, Host: clientHost, Path: "/" + name}},
	}, Identity{Kind: KindClient, Name: name}, opts)
}

// issue signs tmpl with the CA in dir and writes the pair, after checking
// that the result parses back to want.
func issue(dir, certFile, keyFile string, tmpl *x509.Certificate, want Identity, opts []Option) error {
	o, notBefore, notAfter, err := collect(DefaultCertValidity, opts)
	if err != nil {
		return err
	}
	caCert, caKey, err := loadCAPair(dir)
	if err != nil {
		return err
	}
	if notAfter.After(caCert.NotAfter) {
		return fmt.Errorf("validity %v is %w: the certificate would expire at %s, after the CA in %s (%s); give a shorter --validity, or make a new CA with 'ketch certs init --dir %s --overwrite'",
			o.validity, ErrInvalid, notAfter.Format(time.RFC3339), dir, caCert.NotAfter.UTC().Format(time.RFC3339), dir)
	}
	if !o.overwrite {
		if err := refuseExisting(certFile, keyFile); err != nil {
			return err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return err
	}
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("sign certificate: %w", err)
	}
	// Never write a certificate whose identity would not read back.
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("the new certificate does not parse back: %w", err)
	}
	if got, err := ParseIdentity(parsed); err != nil || got != want {
		return fmt.Errorf("the new certificate's identity reads back as %v (%v), not %v", got, err, want)
	}
	return writePair(certFile, keyFile, der, key, o.overwrite)
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // positive, never 0
}

// loadCAPair reads dir/ca.crt and dir/ca.key and checks that they belong
// together.
func loadCAPair(dir string) (*x509.Certificate, crypto.Signer, error) {
	certFile, keyFile := CAPaths(dir)
	hint := fmt.Sprintf("run 'ketch certs init --dir %s' first", dir)
	certPEM, err := os.ReadFile(certFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, notFound(fmt.Sprintf("%s not found in %s: %s", CACertFile, dir, hint))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, notFound(fmt.Sprintf("%s not found in %s: %s", CAKeyFile, dir, hint))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the CA key: %w", err)
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	ca := certs[0]
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("%s is not a CA certificate: %s", certFile, hint)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not match %s: restore the pair, or make a new CA with 'ketch certs init --dir %s --overwrite' and reissue every certificate", keyFile, certFile, dir)
	}
	return ca, key, nil
}

// notFound is a missing file's error whose message is its own (the
// os error's "open ...: no such file or directory" would only repeat it);
// it is fs.ErrNotExist for errors.Is.
type notFound string

func (e notFound) Error() string        { return string(e) }
func (e notFound) Is(target error) bool { return target == fs.ErrNotExist }

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found: give a certificate file such as the ca.crt 'ketch certs init' writes")
	}
	return certs, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found: give the key file 'ketch certs init' wrote")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bad private key: %w", err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("a %T cannot sign", key)
		}
		return s, nil
	}
}

// --------------------------------------------------------------- validation

// ValidateClusterID reports whether id can be the cluster of a node
// certificate: 1 to MaxClusterIDBytes bytes of ASCII letters, digits, '-'
// and '_', in parts of at most 63 bytes separated by single dots (no dot at
// either end). The cluster id is the host of the identity URI, and these
// are the names Go's crypto/x509 accepts there without escaping.
func ValidateClusterID(id string) error {
	bad := func(why string) error {
		return fmt.Errorf("cluster id %q is %w for a certificate: %s", id, ErrInvalid, why)
	}
	switch {
	case id == "":
		return bad("give a non-empty --cluster-id")
	case len(id) > MaxClusterIDBytes:
		return bad(fmt.Sprintf("it is %d bytes; the limit is %d", len(id), MaxClusterIDBytes))
	}
	for _, label := range strings.Split(id, ".") {
		switch {
		case label == "":
			return bad("dots must separate non-empty parts")
		case len(label) > 63:
			return bad("a dot-separated part is longer than 63 bytes")
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' && c != '_' {
				return bad("use only letters, digits, '-', '_' and '.'")
			}
		}
	}
	return nil
}

func validateName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("client name %q is %w: %s", name, ErrInvalid, why)
	}
	if name == "" || len(name) > MaxNameBytes {
		return bad(fmt.Sprintf("give 1 to %d characters", MaxNameBytes))
	}
	if strings.Trim(name, ".") == "" {
		return bad("it must not be only dots")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return bad("use only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// parseHost returns h's IP address if it is one, nil if it is a valid DNS
// name, and an error otherwise.
func parseHost(h string) (net.IP, error) {
	if ip := net.ParseIP(h); ip != nil {
		if v4 := ip.To4(); v4 != nil {
			return v4, nil
		}
		return ip, nil
	}
	bad := func(why string) error {
		return fmt.Errorf("host %q is %w: %s", h, ErrInvalid, why)
	}
	if _, _, err := net.SplitHostPort(h); err == nil || strings.HasPrefix(h, "[") {
		return nil, bad("give a DNS name or an IP address without a port or brackets")
	}
	if h == "" || len(h) > 253 {
		return nil, bad("a DNS name is 1 to 253 characters")
	}
	labels := strings.Split(h, ".")
	for i, label := range labels {
		if i == 0 && label == "*" && len(labels) > 1 {
			continue // a wildcard, as the first label only
		}
		if label == "" || len(label) > 63 {
			return nil, bad("a DNS name is non-empty labels of at most 63 characters separated by single dots, with no trailing dot")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return nil, bad("a DNS label must not start or end with '-'")
		}
		for j := 0; j < len(label); j++ {
			if c := label[j]; !isAlnum(c) && c != '-' {
				return nil, bad("a DNS name has only letters, digits, '-' and '.'; an IP address must be a valid IPv4 or IPv6 address")
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return nil, bad("it looks like an IP address but is not a valid one (a DNS name's last label is never all digits)")
	}
	return nil, nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ---------------------------------------------------------------- identity

// Identity is who a certificate says it is: a node of a cluster, or a
// client.
type Identity struct {
	Kind      string // KindNode or KindClient
	ClusterID string // a node's cluster; "" for a client
	NodeID    uint64 // a node's id; 0 for a client
	Name      string // a client's name; "" for a node
}

// String returns the identity's URI.
func (i Identity) String() string {
	switch i.Kind {
	case KindNode:
		return NodeURI(i.ClusterID, i.NodeID)
	case KindClient:
		return ClientURI(i.Name)
	}
	return "(no identity)"
}

// NodeURI returns the URI SAN of node id of clusterID:
// ketch://CLUSTER/node/ID. clusterID must pass ValidateClusterID; for one
// that does not, the result is not a URI any certificate carries.
func NodeURI(clusterID string, id uint64) string {
	return (&url.URL{Scheme: Scheme, Host: clusterID, Path: "/node/" + strconv.FormatUint(id, 10)}).String()
}

// ClientURI returns the URI SAN of the client name: ketch://client/NAME.
func ClientURI(name string) string {
	return (&url.URL{Scheme: Scheme, Host: clientHost, Path: "/" + name}).String()
}

// ParseIdentity reads the identity from cert's one URI SAN of scheme ketch
// (other schemes are ignored). None, more than one, or one not exactly of
// the forms NodeURI and ClientURI produce is an error wrapping
// ErrNoIdentity. It does not verify cert: call it on a certificate of a
// verified chain (tls.ConnectionState.VerifiedChains[0][0]).
func ParseIdentity(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrNoIdentity)
	}
	var u *url.URL
	for _, x := range cert.URIs {
		if !strings.EqualFold(x.Scheme, Scheme) {
			continue
		}
		if u != nil {
			return Identity{}, fmt.Errorf("%w: certificate %q has more than one ketch:// URI SAN (%s, %s): issue it with exactly one", ErrNoIdentity, cert.Subject.CommonName, u, x)
		}
		u = x
	}
	if u == nil {
		return Identity{}, fmt.Errorf("%w: certificate %q has no ketch:// URI SAN: issue it with 'ketch certs node' or 'ketch certs client'", ErrNoIdentity, cert.Subject.CommonName)
	}
	bad := func(why string) (Identity, error) {
		return Identity{}, fmt.Errorf("%w: certificate %q has a malformed URI SAN %q (%s): want ketch://CLUSTER/node/ID or ketch://client/NAME", ErrNoIdentity, cert.Subject.CommonName, u, why)
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawPath != "" || u.Port() != "" {
		return bad("it may have only a host and a path")
	}
	if !strings.HasPrefix(u.Path, "/") {
		return bad("no path")
	}
	parts := strings.Split(u.Path[1:], "/")
	switch {
	case len(parts) == 2 && parts[0] == KindNode:
		if err := ValidateClusterID(u.Host); err != nil {
			return bad("bad cluster id")
		}
		id, err := strconv.ParseUint(parts[1], 10, 64)
		if err != nil || id == 0 || strconv.FormatUint(id, 10) != parts[1] {
			return bad("the node id must be a positive decimal number")
		}
		return Identity{Kind: KindNode, ClusterID: u.Host, NodeID: id}, nil
	case len(parts) == 1 && u.Host == clientHost:
		if err := validateName(parts[0]); err != nil {
			return bad("bad client name")
		}
		return Identity{Kind: KindClient, Name: parts[0]}, nil
	}
	return bad("unknown form")
}

// ------------------------------------------------------------------ loading

// LoadCA reads a PEM file of one or more CA certificates into a pool.
func LoadCA(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		if !c.IsCA {
			return nil, fmt.Errorf("CA file %s holds %q, which is not a CA certificate: give the ca.crt 'ketch certs init' wrote", file, c.Subject.CommonName)
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// Reloader serves a certificate and key pair from two files, rereading
// them when they change, for tls.Config.GetCertificate (a server) and
// GetClientCertificate (a client, or a node dialing a peer). On use it
// stats both files, at most once per ReloadInterval; if either changed
// (modification time, size, or a different file renamed over it) it loads
// the pair again. A load that fails keeps serving the last good pair and
// logs one warning to Logger, until the files change again. Its methods
// are safe for concurrent use.
type Reloader struct {
	// Logger, if set before first use, receives a warning per failed
	// reload and an info line per successful one; nil discards them.
	Logger *slog.Logger
	// Check, if set before first use, vets every reloaded pair (not the
	// first, which NewReloader loads): one it refuses is not served, as
	// if it had failed to load.
	Check func(*tls.Certificate) error

	w watcher[*tls.Certificate]
}

// NewReloader loads the pair certFile, keyFile; it fails if they cannot be
// loaded now, so a Reloader always has a good pair to serve.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{}
	load := func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load certificate %s and key %s: %w", certFile, keyFile, err)
		}
		if r.Check != nil {
			if err := r.Check(&c); err != nil {
				return nil, fmt.Errorf("certificate %s: %w", certFile, err)
			}
		}
		return &c, nil
	}
	if err := r.w.init([]string{certFile, keyFile}, load); err != nil {
		return nil, fmt.Errorf("%w: give a pair 'ketch certs node' or 'ketch certs client' wrote", err)
	}
	return r, nil
}

// Certificate returns the current pair, rereading the files first if they
// changed.
func (r *Reloader) Certificate() *tls.Certificate { return r.w.get(r.Logger) }

// GetCertificate is for tls.Config.GetCertificate. Its error is always nil.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Certificate(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate. Its error
// is always nil.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Certificate(), nil
}

// PoolReloader serves a CA pool from a file, rereading it when it changes,
// in the same way as Reloader. A tls.Config's pools are fixed, so use it
// per connection: on a server, return a clone of the base config with
// ClientCAs set to Pool() from tls.Config.GetConfigForClient; on a client,
// verify in tls.Config.VerifyConnection against Pool().
type PoolReloader struct {
	// Logger is as in Reloader.
	Logger *slog.Logger

	w watcher[*x509.CertPool]
}

// NewPoolReloader loads caFile; it fails if that cannot be loaded now.
func NewPoolReloader(caFile string) (*PoolReloader, error) {
	p := &PoolReloader{}
	if err := p.w.init([]string{caFile}, func() (*x509.CertPool, error) { return LoadCA(caFile) }); err != nil {
		return nil, err
	}
	return p, nil
}

// Pool returns the current CA pool, rereading the file first if it changed.
// Callers must not modify it.
func (p *PoolReloader) Pool() *x509.CertPool { return p.w.get(p.Logger) }

// watcher holds a value loaded from files and reloads it when they change.
type watcher[T any] struct {
	files    []string
	load     func() (T, error)
	interval time.Duration    // ReloadInterval; tests shorten it
	now      func() time.Time // time.Now; tests replace it

	mu      sync.Mutex
	cur     T
	tried   []os.FileInfo // the files as they were at the latest load, good or not
	checked time.Time     // when the files were last stat-ed
	lastErr string        // the latest failure logged, "" after a success
}

func (w *watcher[T]) init(files []string, load func() (T, error)) error {
	w.files, w.load, w.interval, w.now = files, load, ReloadInterval, time.Now
	// Stat before reading: a change after the stat is seen at the next check.
	infos, err := statAll(files)
	if err != nil {
		return err
	}
	v, err := load()
	if err != nil {
		return err
	}
	w.cur, w.tried, w.checked = v, infos, w.now()
	return nil
}

func (w *watcher[T]) get(logger *slog.Logger) T {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if d := now.Sub(w.checked); d >= 0 && d < w.interval {
		return w.cur
	}
	w.checked = now
	infos, err := statAll(w.files)
	if err == nil {
		if sameFiles(infos, w.tried) {
			return w.cur
		}
		w.tried = infos
		var v T
		if v, err = w.load(); err == nil {
			w.cur, w.lastErr = v, ""
			if logger != nil {
				logger.Info("reloaded certificate files", "files", strings.Join(w.files, ","))
			}
			return v
		}
	}
	if logger != nil && err.Error() != w.lastErr {
		logger.Warn("reloading certificate files failed; still serving the previous ones", "files", strings.Join(w.files, ","), "err", err)
	}
	w.lastErr = err.Error()
	return w.cur
}

func statAll(files []string) ([]os.FileInfo, error) {
	infos := make([]os.FileInfo, len(files))
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		infos[i] = fi
	}
	return infos, nil
}

func sameFiles(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size() {
			return false
		}
	}
	return true
}

// ------------------------------------------------------------------ writing

// refuseExisting returns an ErrExists error naming the first of files that
// exists.
func refuseExisting(files ...string) error {
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("%s %w: refusing to overwrite it; pass --overwrite to replace it (and the rest of its pair)", f, ErrExists)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("check %s: %w", f, err)
		}
	}
	return nil
}

// writePair writes the key (0600) and then the certificate (0644).
func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey, overwrite bool) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode private key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeFile(keyFile, keyPEM, 0o600, overwrite); err != nil {
		return err
	}
	if err := writeFile(certFile, certPEM, 0o644, overwrite); err != nil {
		if !overwrite {
			_ = os.Remove(keyFile) // never leave half a new pair
		}
		return err
	}
	return nil
}

// writeFile writes data to name with exactly mode perm. Without overwrite
// it creates name exclusively (refusing an existing file, even one created
// since the caller checked); with it, it writes a temporary file beside
// name and renames it over name, so readers never see half a file.
func writeFile(name string, data []byte, perm os.FileMode, overwrite bool) error {
	var f *os.File
	var err error
	if overwrite {
		f, err = os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*") // created 0600
	} else {
		f, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s %w: refusing to overwrite it; pass --overwrite to replace it", name, ErrExists)
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // exactly perm, whatever the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && overwrite {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
