// dhtpeer is a Go libp2p node that joins a Spegel DHT with the settings Spegel's own router uses
// (pkg/routing/libp2p/libp2p.go): TCP only with go-libp2p's default security and muxers, kad-dht in server mode
// under the `/spegel` prefix, provider records valid for AdvertiseTTL + 2 × MaxReprovideDelay = 19 min with a 1 h
// address TTL, and a SweepingProvider reproviding every 15 min. The integration tests use it to check that
// spegel-ts and Go Spegel nodes can share one DHT.
//
// It listens on -listen, bootstraps from -bootstrap multiaddrs (with `/p2p/<id>`, or without one as Spegel's DNS
// bootstrapper produces them), provides the -provide keys, joins only the private network of -psk-file's swarm key
// when given one, and answers a small HTTP control API on -control:
//
//	GET  /id                          {"id": "...", "addrs": ["/ip4/…/tcp/…/p2p/…"]}
//	GET  /ready                       200 when Spegel's Ready() would be true (routing table not empty, provider online)
//	GET  /peers                       one JSON line per routing-table peer: {"id", "addrs", "ips"}
//	POST /provide?key=K[&key=K2]      Spegel's Advertise(keys)
//	POST /provide?key=K&local=1       only the local provider record (Advertise's first step), never published:
//	                                  others learn of it only by asking this node (GET_PROVIDERS)
//	POST /withdraw?key=K              Spegel's Withdraw(keys)
//	GET  /findproviders?key=K[&count=N][&self=1][&timeout=10s]
//	                                  one JSON line per provider found, as found: {"id", "addrs", "ips"}
//	GET  /getproviders?key=K&peer=ID  one GET_PROVIDERS request to that peer, its answer as sent:
//	                                  {"providers": [{"id", "addrs", "ips"}], "closer": [...]}
//	GET  /localproviders?key=K        one JSON line per provider record this node stores for K
//
// Log lines (JSON, one event each) go to stdout; the first is {"msg":"listening",...}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p-kad-dht/provider"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	mc "github.com/multiformats/go-multicodec"
	mh "github.com/multiformats/go-multihash"
)

// Spegel's defaults (RouterConfig in pkg/routing/libp2p/libp2p.go and the run loop of its Router).
const (
	advertiseTTL       = 15 * time.Minute
	maxReprovideDelay  = 2 * time.Minute
	providerAddrTTL    = 1 * time.Hour
	onlineCheckEvery   = 30 * time.Second
	bootstrapTimeout   = 30 * time.Second
	backoffMin         = 50 * time.Millisecond
	backoffMax         = 10 * time.Second
	rebootstrapEvery   = 30 * time.Minute
	dhtProtocolPrefix  = "/spegel"
	defaultControlAddr = "127.0.0.1:5080"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	listen := flag.String("listen", ":5001", "router address host:port (Spegel's --router-addr)")
	control := flag.String("control", defaultControlAddr, "address of the HTTP control API")
	var bootstrap, provide listFlag
	flag.Var(&bootstrap, "bootstrap", "bootstrap multiaddr, with or without /p2p/<id> (repeatable)")
	flag.Var(&provide, "provide", "key to provide from the start (repeatable)")
	pskFile := flag.String("psk-file", "", "swarm key file of a private network (go-libp2p's pnet format), as spegel-ts's --router-psk-file")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var psk pnet.PSK
	if *pskFile != "" {
		f, err := os.Open(*pskFile)
		if err == nil {
			psk, err = pnet.DecodeV1PSK(f)
			f.Close()
		}
		if err != nil {
			log.Error("exiting", "err", fmt.Sprintf("-psk-file %s: %v", *pskFile, err))
			os.Exit(1)
		}
	}
	if err := run(ctx, log, *listen, *control, bootstrap, provide, psk); err != nil {
		log.Error("exiting", "err", err.Error())
		os.Exit(1)
	}
}

type node struct {
	log       *slog.Logger
	host      host.Host
	kdht      *dht.IpfsDHT
	prov      *provider.SweepingProvider
	messenger *pb.ProtocolMessenger
	online    atomic.Bool // set while the provider reports online
	boot      []peer.AddrInfo
	protocols []ma.Multiaddr
}

func run(ctx context.Context, log *slog.Logger, listen, control string, bootstrap, provide []string, psk pnet.PSK) error {
	listenAddrs, err := listenMultiaddrs(listen)
	if err != nil {
		return err
	}
	boot, err := parseBootstrap(bootstrap)
	if err != nil {
		return err
	}
	h, err := libp2p.New(
		libp2p.ListenAddrs(listenAddrs...),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.AddrsFactory(func(addrs []ma.Multiaddr) []ma.Multiaddr {
			out := []ma.Multiaddr{}
			for _, a := range addrs {
				if !manet.IsIPLoopback(a) {
					out = append(out, a)
				}
			}
			return out
		}),
		libp2p.ChainOptions(libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport)),
		// nil: an open network.
		libp2p.PrivateNetwork(psk),
	)
	if err != nil {
		return fmt.Errorf("could not create host: %w", err)
	}
	kdht, err := dht.New(h,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(dhtProtocolPrefix),
		dht.ProviderManagerOpts(
			records.ProvideValidity(advertiseTTL+2*maxReprovideDelay),
			records.ProviderAddrTTL(providerAddrTTL),
		),
	)
	if err != nil {
		return fmt.Errorf("could not create DHT: %w", err)
	}
	n := &node{log: log, host: h, kdht: kdht, boot: boot, protocols: transportParts(h.Addrs())}
	if n.messenger, err = pb.NewProtocolMessenger(kdht.MessageSender()); err != nil {
		return err
	}
	n.prov, err = provider.New(
		provider.WithConnectivityCallbacks(func() { n.setOnline(true) }, func() { n.setOnline(false) }, nil),
		provider.WithRouter(kdht),
		provider.WithHost(h),
		provider.WithMessageSender(kdht.MessageSender()),
		provider.WithSelfAddrs(h.Addrs),
		provider.WithReprovideInterval(advertiseTTL),
		provider.WithMaxReprovideDelay(maxReprovideDelay),
		provider.WithOfflineDelay(0),
		provider.WithConnectivityCheckOnlineInterval(onlineCheckEvery),
		provider.WithAddLocalRecord(func(ctx context.Context, k mh.Multihash) error {
			return kdht.ProviderStore().AddProvider(ctx, k, peer.AddrInfo{ID: h.ID()})
		}),
	)
	if err != nil {
		return fmt.Errorf("could not create provider: %w", err)
	}
	defer func() {
		for _, c := range []interface{ Close() error }{n.prov, kdht, h} {
			_ = c.Close()
		}
	}()

	ln, err := net.Listen("tcp", control)
	if err != nil {
		return fmt.Errorf("control API: %w", err)
	}
	srv := &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()

	log.Info("listening", "id", h.ID().String(), "addrs", n.fullAddrs(), "control", ln.Addr().String())
	if err := n.advertise(ctx, provide); err != nil {
		return err
	}
	n.bootstrapLoop(ctx)
	return nil
}

// setOnline is Spegel's connectivity gate: the provider's callbacks say when the node is online.
func (n *node) setOnline(online bool) {
	if n.online.Swap(online) != online {
		n.log.Info("provider connectivity", "online", online)
	}
}

func (n *node) isOnline() bool {
	return n.online.Load()
}

// bootstrapLoop follows Spegel's Router.Run: while the provider is not online, bootstrap with backoff
// (50 ms doubling to 10 s); once online, bootstrap again every 30 min.
func (n *node) bootstrapLoop(ctx context.Context) {
	delay := backoffMin
	var last time.Time
	for ctx.Err() == nil {
		if n.isOnline() {
			if time.Since(last) >= rebootstrapEvery {
				last = time.Now()
				if err := n.bootstrapPeers(ctx); err != nil {
					n.log.Warn("periodic bootstrap failed", "err", err.Error())
				}
			}
			// Re-check the gate every second: the provider may report a disconnection.
			sleep(ctx, time.Second)
			continue
		}
		err := n.bootstrapPeers(ctx)
		if err == nil && !n.isOnline() {
			// The provider's connectivity probe runs on its own schedule; retry until it reports online.
			err = errors.New("bootstrap completed but connectivity has not been reached")
		}
		if err == nil {
			last = time.Now()
			n.log.Info("bootstrap completed", "routingTable", n.kdht.RoutingTable().Size())
			delay = backoffMin
			continue
		}
		n.log.Warn("bootstrap failed", "err", err.Error(), "retryIn", delay.String())
		sleep(ctx, delay)
		delay = min(delay*2, backoffMax)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// bootstrapPeers dials every bootstrap peer the way Spegel's bootstrapPeers does: an address without a transport
// part gets this node's own transport parts; a peer without an id is dialled under a throw-away id first, and its
// real id is taken from the security handshake's mismatch error.
func (n *node) bootstrapPeers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
	defer cancel()
	self := peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
	var errs []error
	for _, info := range n.boot {
		if info.ID != "" && info.ID == self.ID {
			continue
		}
		addrs := []ma.Multiaddr{}
		for _, a := range info.Addrs {
			if _, rest := ma.SplitFirst(a); len(rest) > 0 {
				addrs = append(addrs, a)
				continue
			}
			for _, p := range n.protocols {
				addrs = append(addrs, ma.Join(a, p))
			}
		}
		if anyEqual(self.Addrs, addrs) {
			continue
		}
		info = peer.AddrInfo{ID: info.ID, Addrs: addrs}
		if info.ID == "" {
			id, err := n.discoverID(ctx, addrs)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			info.ID = id
			n.log.Info("learned bootstrap peer id", "id", id.String(), "addrs", fmt.Sprint(addrs))
		}
		if err := n.host.Connect(ctx, info); err != nil {
			errs = append(errs, err)
			continue
		}
	}
	if len(errs) > 0 && len(errs) == len(n.boot) {
		return errors.Join(errs...)
	}
	if n.kdht.RoutingTable().Size() == 0 {
		return errors.New("routing table is empty after bootstrapping")
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-n.kdht.RefreshRoutingTable():
		return err
	}
}

func (n *node) discoverID(ctx context.Context, addrs []ma.Multiaddr) (peer.ID, error) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return "", err
	}
	probe, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return "", err
	}
	err = n.host.Connect(ctx, peer.AddrInfo{ID: probe, Addrs: addrs})
	n.host.Peerstore().ClearAddrs(probe)
	n.host.Peerstore().RemovePeer(probe)
	var mismatch sec.ErrPeerIDMismatch
	if errors.As(err, &mismatch) {
		return mismatch.Actual, nil
	}
	if err == nil {
		return "", fmt.Errorf("dialling %v under a throw-away id succeeded", addrs)
	}
	return "", fmt.Errorf("could not learn the peer id at %v: %w", addrs, err)
}

// advertise is Spegel's Router.Advertise: a local provider record at once, then the provider publishes.
func (n *node) advertise(ctx context.Context, keys []string) error {
	hs := []mh.Multihash{}
	for _, key := range keys {
		c, err := keyCid(key)
		if err != nil {
			return err
		}
		if err := n.kdht.ProviderStore().AddProvider(ctx, c.Hash(), peer.AddrInfo{ID: n.host.ID()}); err != nil {
			return err
		}
		hs = append(hs, c.Hash())
	}
	if len(hs) == 0 {
		return nil
	}
	return n.prov.StartProviding(false, hs...)
}

func (n *node) recordLocally(ctx context.Context, keys []string) error {
	for _, key := range keys {
		c, err := keyCid(key)
		if err != nil {
			return err
		}
		if err := n.kdht.ProviderStore().AddProvider(ctx, c.Hash(), peer.AddrInfo{ID: n.host.ID()}); err != nil {
			return err
		}
	}
	return nil
}

func (n *node) withdraw(keys []string) error {
	hs := []mh.Multihash{}
	for _, key := range keys {
		c, err := keyCid(key)
		if err != nil {
			return err
		}
		hs = append(hs, c.Hash())
	}
	return n.prov.StopProviding(hs...)
}

type peerJSON struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
	IPs   []string `json:"ips"`
}

func toPeerJSON(info peer.AddrInfo) peerJSON {
	out := peerJSON{ID: info.ID.String(), Addrs: []string{}, IPs: []string{}}
	seen := map[string]bool{}
	for _, a := range info.Addrs {
		out.Addrs = append(out.Addrs, a.String())
		if ip, err := manet.ToIP(a); err == nil && !seen[ip.String()] {
			seen[ip.String()] = true
			out.IPs = append(out.IPs, ip.String())
		}
	}
	return out
}

func (n *node) fullAddrs() []string {
	out := []string{}
	for _, a := range n.host.Addrs() {
		out = append(out, a.String()+"/p2p/"+n.host.ID().String())
	}
	return out
}

func (n *node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /id", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"id": n.host.ID().String(), "addrs": n.fullAddrs()})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		size := n.kdht.RoutingTable().Size()
		ready := size > 0 && n.isOnline()
		status := http.StatusOK
		if !ready {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, map[string]any{"ready": ready, "routingTable": size, "online": n.isOnline()})
	})
	mux.HandleFunc("GET /peers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, id := range n.kdht.RoutingTable().ListPeers() {
			_ = enc.Encode(toPeerJSON(peer.AddrInfo{ID: id, Addrs: n.host.Peerstore().Addrs(id)}))
		}
	})
	mux.HandleFunc("POST /provide", func(w http.ResponseWriter, r *http.Request) {
		keys := r.URL.Query()["key"]
		advertise := n.advertise
		if r.URL.Query().Get("local") == "1" {
			advertise = n.recordLocally
		}
		if err := advertise(r.Context(), keys); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
			return
		}
		n.log.Info("providing", "keys", keys)
		writeJSON(w, http.StatusOK, map[string]any{"keys": len(keys)})
	})
	mux.HandleFunc("POST /withdraw", func(w http.ResponseWriter, r *http.Request) {
		keys := r.URL.Query()["key"]
		if err := n.withdraw(keys); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"keys": len(keys)})
	})
	mux.HandleFunc("GET /getproviders", func(w http.ResponseWriter, r *http.Request) {
		c, err := keyCid(r.URL.Query().Get("key"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
			return
		}
		p, err := peer.Decode(r.URL.Query().Get("peer"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		provs, closer, err := n.messenger.GetProviders(ctx, p, c.Hash())
		if err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]any{"error": err.Error()})
			return
		}
		list := func(infos []*peer.AddrInfo) []peerJSON {
			out := []peerJSON{}
			for _, info := range infos {
				out = append(out, toPeerJSON(*info))
			}
			return out
		}
		writeJSON(w, http.StatusOK, map[string]any{"providers": list(provs), "closer": list(closer)})
	})
	mux.HandleFunc("GET /localproviders", func(w http.ResponseWriter, r *http.Request) {
		c, err := keyCid(r.URL.Query().Get("key"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
			return
		}
		infos, err := n.kdht.ProviderStore().GetProviders(r.Context(), c.Hash())
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, info := range infos {
			_ = enc.Encode(toPeerJSON(info))
		}
	})
	mux.HandleFunc("GET /findproviders", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		c, err := keyCid(q.Get("key"))
		if err != nil || q.Get("key") == "" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "key is required"})
			return
		}
		count, _ := strconv.Atoi(q.Get("count"))
		timeout := 10 * time.Second
		if t := q.Get("timeout"); t != "" {
			if timeout, err = time.ParseDuration(t); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		flusher, _ := w.(http.Flusher)
		enc := json.NewEncoder(w)
		// As Spegel's Lookup: skip self unless asked (Spegel's Measure keeps it).
		for info := range n.kdht.FindProvidersAsync(ctx, c, count) {
			if info.ID == n.host.ID() && q.Get("self") != "1" {
				continue
			}
			_ = enc.Encode(toPeerJSON(info))
			if flusher != nil {
				flusher.Flush()
			}
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// keyCid is Spegel's createCid: CIDv1, codec raw, sha2-256 of the key string's bytes.
func keyCid(key string) (cid.Cid, error) {
	return cid.Prefix{Version: 1, Codec: uint64(mc.Raw), MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte(key))
}

// listenMultiaddrs follows Spegel's listenMultiaddrs: QUIC and TCP on the given IP, or on :: and 0.0.0.0 when the
// host part is empty. Only TCP is enabled as a transport, so the QUIC addresses are not bound (as in Spegel).
func listenMultiaddrs(addr string) ([]ma.Multiaddr, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips := []string{"/ip6/::", "/ip4/0.0.0.0"}
	if ip := net.ParseIP(h); ip != nil {
		if ip.To4() != nil {
			ips = []string{"/ip4/" + h}
		} else {
			ips = []string{"/ip6/" + h}
		}
	}
	out := []ma.Multiaddr{}
	for _, ip := range ips {
		for _, suffix := range []string{"/udp/" + p + "/quic-v1", "/tcp/" + p} {
			a, err := ma.NewMultiaddr(ip + suffix)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// parseBootstrap groups multiaddrs by peer id; id-less addresses are one peer each (a DNS answer's shape).
func parseBootstrap(list []string) ([]peer.AddrInfo, error) {
	byID := map[peer.ID]*peer.AddrInfo{}
	order := []peer.ID{}
	anonymous := []peer.AddrInfo{}
	for _, s := range list {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("bootstrap %q: %w", s, err)
		}
		transport, id := peer.SplitAddr(a)
		if id == "" {
			anonymous = append(anonymous, peer.AddrInfo{Addrs: []ma.Multiaddr{a}})
			continue
		}
		info, ok := byID[id]
		if !ok {
			info = &peer.AddrInfo{ID: id}
			byID[id] = info
			order = append(order, id)
		}
		if transport != nil {
			info.Addrs = append(info.Addrs, transport)
		}
	}
	out := []peer.AddrInfo{}
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return append(out, anonymous...), nil
}

// transportParts are the parts after the IP of this host's addresses (`/tcp/5001`), as Spegel's protocolsFromAddrs.
func transportParts(addrs []ma.Multiaddr) []ma.Multiaddr {
	seen := map[string]bool{}
	out := []ma.Multiaddr{}
	for _, a := range addrs {
		_, rest := ma.SplitFirst(a)
		if len(rest) == 0 || seen[rest.String()] {
			continue
		}
		seen[rest.String()] = true
		out = append(out, rest)
	}
	return out
}

func anyEqual(a, b []ma.Multiaddr) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Equal(y) {
				return true
			}
		}
	}
	return false
}
