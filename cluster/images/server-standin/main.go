// A stand-in for the NeuralLog server, for the local cluster's tests only: the real image is not public.
//
// It takes the environment the tenant chart gives the server (PORT, REDIS_URL, REDIS_PASSWORD), talks to
// Redis over RESP itself, and answers GET /health (and /healthz) with 200 while Redis answers PING, checked
// live with a short timeout, and 503 with the reason otherwise. It logs its configuration, every Redis
// connection result and every change of its health answer to stdout, and never the password.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const redisTimeout = time.Second

// target is where Redis is and how to log in; password is never logged.
type target struct {
	address        string
	user           string
	password       string
	passwordSource string // "REDIS_URL", "REDIS_PASSWORD" or "none"
	db             int
}

// parseRedisURL reads redis://[user][:password@]host:port[/db]. Everything up to the last "@" is the user
// information, so a password with "/" or "@" in it (the chart may put $(REDIS_PASSWORD) there as is) still
// parses. Errors never quote the URL: it may carry the password.
func parseRedisURL(raw, envPassword string) (target, error) {
	rest, found := strings.CutPrefix(raw, "redis://")
	if !found {
		return target{}, errors.New("REDIS_URL does not start with redis://")
	}
	t := target{passwordSource: "none"}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		userinfo := rest[:at]
		rest = rest[at+1:]
		user, password, hasPassword := strings.Cut(userinfo, ":")
		t.user = unescape(user)
		if hasPassword && password != "" {
			t.password = unescape(password)
			t.passwordSource = "REDIS_URL"
		}
	}
	hostport, db, hasDB := strings.Cut(rest, "/")
	if hasDB && db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return target{}, errors.New("REDIS_URL names a database that is not a number")
		}
		t.db = n
	}
	if hostport == "" {
		return target{}, errors.New("REDIS_URL names no host")
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), "6379")
	}
	t.address = hostport
	if t.password == "" && envPassword != "" {
		t.password = envPassword
		t.passwordSource = "REDIS_PASSWORD"
	}
	return t, nil
}

func unescape(s string) string {
	if decoded, err := url.PathUnescape(s); err == nil {
		return decoded
	}
	return s
}

// redisClient holds one connection, opened again after any failure.
type redisClient struct {
	target target
	mu     sync.Mutex
	conn   net.Conn
	reader *bufio.Reader
}

func (c *redisClient) command(args ...string) (string, error) {
	if err := c.conn.SetDeadline(time.Now().Add(redisTimeout)); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, arg := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(arg), arg)
	}
	if _, err := c.conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(c.reader)
}

// readReply reads one RESP reply; an error reply becomes an error carrying Redis's message.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply from redis")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis answered: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", errors.New("bad bulk length from redis")
		}
		if n < 0 {
			return "", nil
		}
		data := make([]byte, n+2)
		if _, err := io.ReadFull(r, data); err != nil {
			return "", err
		}
		return string(data[:n]), nil
	default:
		return "", fmt.Errorf("unexpected reply type %q from redis", line[0])
	}
}

func (c *redisClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.reader = nil, nil
	}
}

// connect opens a connection, logs in and selects the database; it logs the result.
func (c *redisClient) connect() error {
	conn, err := net.DialTimeout("tcp", c.target.address, redisTimeout)
	if err != nil {
		log.Printf("redis: connection to %s failed: %v", c.target.address, err)
		return err
	}
	c.conn, c.reader = conn, bufio.NewReader(conn)
	if c.target.password != "" {
		args := []string{"AUTH", c.target.password}
		if c.target.user != "" {
			args = []string{"AUTH", c.target.user, c.target.password}
		}
		if _, err := c.command(args...); err != nil {
			c.close()
			err = fmt.Errorf("AUTH (password from %s) failed: %w", c.target.passwordSource, err)
			log.Printf("redis: connected to %s but %v", c.target.address, err)
			return err
		}
	}
	if c.target.db != 0 {
		if _, err := c.command("SELECT", strconv.Itoa(c.target.db)); err != nil {
			c.close()
			log.Printf("redis: connected to %s but SELECT %d failed: %v", c.target.address, c.target.db, err)
			return err
		}
	}
	log.Printf("redis: connected to %s (db %d, password from %s)", c.target.address, c.target.db, c.target.passwordSource)
	return nil
}

// ping checks Redis now: on the open connection, or on a new one when there is none or it broke.
func (c *redisClient) ping() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		reply, err := c.command("PING")
		if err == nil && reply == "PONG" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("PING answered %q", reply)
		}
		log.Printf("redis: connection to %s lost: %v", c.target.address, err)
		c.close()
	}
	if err := c.connect(); err != nil {
		return err
	}
	reply, err := c.command("PING")
	if err == nil && reply != "PONG" {
		err = fmt.Errorf("PING answered %q", reply)
	}
	if err != nil {
		c.close()
	}
	return err
}

type server struct {
	redis     *redisClient // nil when REDIS_URL is unusable
	configErr error
	mu        sync.Mutex
	answer    string // the last health answer, to log its changes
}

type health struct {
	Status string `json:"status"`
	Redis  string `json:"redis"`
	Reason string `json:"reason,omitempty"`
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	code, body := http.StatusOK, health{Status: "ok", Redis: "ok"}
	err := s.configErr
	if err == nil {
		err = s.redis.ping()
	}
	if err != nil {
		code, body = http.StatusServiceUnavailable, health{Status: "unavailable", Redis: "down", Reason: err.Error()}
	}
	answer := fmt.Sprintf("%d %s", code, body.Reason)
	s.mu.Lock()
	if answer != s.answer {
		if code == http.StatusOK {
			log.Printf("health: %d ok (redis answers PING)", code)
		} else {
			log.Printf("health: %d unavailable: %s", code, body.Reason)
		}
		s.answer = answer
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}

func (s *server) root(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"service": "neurallog-server-standin"})
}

func main() {
	log.SetOutput(os.Stdout)
	log.SetFlags(log.LstdFlags | log.LUTC)
	port := envOr("PORT", "3030")
	listen := net.JoinHostPort(os.Getenv("HOST"), port)
	s := &server{}
	t, err := parseRedisURL(envOr("REDIS_URL", "redis://redis:6379"), os.Getenv("REDIS_PASSWORD"))
	if err != nil {
		s.configErr = err
		log.Printf("config: %v; /health will answer 503", err)
	} else {
		s.redis = &redisClient{target: t}
		user := t.user
		if user == "" {
			user = "default"
		}
		log.Printf("config: listen %s, redis %s db %d user %s, password from %s, NODE_ENV=%q LOG_LEVEL=%q",
			listen, t.address, t.db, user, t.passwordSource, os.Getenv("NODE_ENV"), os.Getenv("LOG_LEVEL"))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/health", s.health)
	mux.HandleFunc("/healthz", s.health)
	mux.HandleFunc("/", s.root)
	httpServer := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	listener, err := net.Listen("tcp", listen)
	if err != nil {
		log.Fatalf("listen %s: %v", listen, err)
	}
	log.Printf("listening on %s", listener.Addr())
	if s.redis != nil {
		// One check at start, so the log says at once whether Redis is reachable.
		if err := s.redis.ping(); err == nil {
			log.Printf("redis: answers PING")
		}
	}
	// As PID 1 of a container the default action of SIGTERM is ignored: stop explicitly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		log.Printf("stopping")
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		httpServer.Shutdown(shutdown)
	}()
	if err := httpServer.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}
