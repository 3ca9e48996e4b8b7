// Command coredns is CoreDNS with the few plugins a cluster's DNS needs and none that reach outside:
// no forward, so names outside the cluster domain are never sent anywhere.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives is the order in which the plugins handle a query: CoreDNS's own order, restricted to those
// compiled in.
var directives = []string{"errors", "log", "health", "ready", "cache", "loop", "kubernetes"}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
