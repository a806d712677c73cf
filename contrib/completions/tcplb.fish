# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_tcplb_global_optspecs
    string join \n listen= backlog= accept-proxy protocol= name= b/backend= strategy= connect-timeout= retries= on-failure= send-proxy= backup= slow-start= hash-balance-factor= resolve-interval= resolve-ttl-min= health-interval= health-timeout= rise= fall= health-send= health-expect= health-expect-match= health-http= health-udp= health-http-host= health-expect-status= health-expect-body= health-exec= agent-port= agent-send= agent-interval= on-down= on-backup-up= panic-threshold= max-fails= fail-timeout= max-ejection-percent= max-ejection-time= health-port= max-conns= queue-timeout= idle-timeout= allow= deny= max-conns-per-ip= rate-per-ip= per-ip-ipv6-prefix= max-connection-age= tcp-keepalive= tcp-user-timeout= responses= per-datagram max-sessions= max-sessions-per-ip= datagram-rate-per-ip= max-datagram-size= tls-cert= tls-key= backend-tls backend-ca= admin= admin-token-file= admin-socket= state-file= ready-requires-backends config= drain-timeout= shutdown-delay= upgrade-move-connections= workers= splice= resolver= access-log= access-log-format= pid-file= h/help V/version
end

function __fish_tcplb_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_tcplb_global_optspecs) -- $cmd 2>/dev/null
    or return 0
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_tcplb_using_subcommand
    set -l cmd (__fish_tcplb_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c tcplb -n "__fish_tcplb_needs_command" -l listen -d 'Address to accept clients on: ADDR:PORT, [IPv6]:PORT, or a bare PORT' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l backlog -d 'Listen backlog: connections the kernel queues before we accept them' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l protocol -d '`tcp` (connections) or `udp` (datagrams, in sessions; see the UDP section)' -r -f -a "tcp\t''
udp\t''"
complete -c tcplb -n "__fish_tcplb_needs_command" -l name -d 'The pool\'s name in the control API (/api/v1/pools/NAME). [default: the bound listen address]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -s b -l backend -d 'Backend HOST:PORT[=WEIGHT][,maxconn=N]; repeat the flag or separate backends with commas. A HOST that is a name is looked up again (A, or AAAA without A) and every address is a backend; srv:NAME takes ports and weights from SRV records. [default: 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l strategy -d 'How to choose a backend' -r -f -a "round-robin\t''
least-conn\t''
p2c\t''
hash\t''
maglev\t''"
complete -c tcplb -n "__fish_tcplb_needs_command" -l connect-timeout -d 'Give up connecting to a backend after this long' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l retries -d 'After a failed connect, try up to this many other healthy backends' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l on-failure -d 'What a client gets when no backend can take it: `http` (a minimal 502/503 response) or `close` (just close, for non-HTTP protocols)' -r -f -a "http\t''
close\t''"
complete -c tcplb -n "__fish_tcplb_needs_command" -l send-proxy -d 'Send a PROXY protocol header (v1 or v2) to backends, so they see the client\'s address. [default: off]' -r -f -a "v1\t''
v2\t''"
complete -c tcplb -n "__fish_tcplb_needs_command" -l backup -d 'A backup backend, same syntax as --backend: it gets connections only while no primary backend is eligible. [default: none]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l slow-start -d 'A backend that becomes eligible again (recovered, added, out of drain or maintenance) ramps from 10% to its full share over this long. [default: off]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l hash-balance-factor -d 'With --strategy hash or maglev: no backend takes more open connections than this factor times the mean (bounded load, e.g. 1.25). [default: unbounded]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l resolve-interval -d 'Look backend names up again at least this often; a shorter DNS TTL brings the next lookup forward. A failed lookup keeps the backends found last and is retried after this long' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l resolve-ttl-min -d 'Never look a backend name up again sooner than this, however short its TTL (Consul answers with TTL 0)' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-interval -d 'Time between health checks of each backend' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-timeout -d 'A health check that takes longer than this fails' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l rise -d 'Consecutive passed checks that bring a DOWN backend back' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l fall -d 'Consecutive failures (checks or connects) that take a backend out' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-send -d 'Bytes a health check sends after connecting; escapes \\r \\n \\t \\\\ \\xNN. Example: \'PING\\r\\n\'. [default: none: a plain connect check]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-expect -d 'What the health check reply must hold (see --health-expect-match), e.g. \'+PONG\'. [default: none]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-expect-match -d 'How --health-expect matches what arrived: `prefix`, `contains` (anywhere in it, e.g. role:master) or `regex`' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-http -d 'An HTTP/1.1 check instead: `PATH` or `METHOD PATH`, e.g. \'OPTIONS /primary\' (Patroni\'s API, with --health-port 8008). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-udp -d 'A UDP check (UDP listeners): send this datagram (escapes as --health-send; may be empty); with --health-expect the reply must match, else any reply or silence passes and an ICMP port unreachable fails. [default: an empty datagram, on a UDP listener without a check of its own]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-http-host -d 'The Host header of --health-http. [default: the check target\'s IP:PORT]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-expect-status -d 'The statuses that pass --health-http: codes and classes, comma-separated, e.g. 200 or 200,3xx. [default: 2xx,3xx]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-expect-body -d 'Text the --health-http response body must contain. [default: any body]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-exec -d 'Run a program as the check, e.g. \'/usr/bin/pg_isready -h {host} -p {port}\': words split on spaces, no shell; exit 0 is up; killed at --health-timeout; its first line of output is the reason. [default: off]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l agent-port -d 'HAProxy\'s agent check: read the state and weight the agent on this port of each backend\'s check address reports (`75%`, `drain`, `down #why`). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l agent-send -d 'Bytes sent to the agent after connecting, e.g. \'web/a\\n\'. [default: none]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l agent-interval -d 'Time between agent checks of each backend' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l on-down -d 'What checks marking a backend down do to its open connections: `keep` them, or `close` them at once (HAProxy\'s shutdown-sessions)' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l on-backup-up -d 'What a primary marked up again does to the backups\' open connections: `keep` or `close`' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l panic-threshold -d 'While fewer than this percent of the ready primaries pass their checks, balance over all of them regardless (Envoy\'s panic threshold). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l max-fails -d 'Passive health: N failed connects within --fail-timeout take a backend out for --fail-timeout, before the prober notices. 0 is off' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l fail-timeout -d 'Window for --max-fails, and the first ejection\'s length; each ejection in a row lasts one more --fail-timeout' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l max-ejection-percent -d 'Passive health ejects at most this percent of the pool at once (always at least one backend)' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l max-ejection-time -d 'The longest a repeated ejection lasts' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l health-port -d 'Check every backend on this port instead of its traffic port, for health served beside the service. [default: the backend\'s port]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l max-conns -d 'Most client connections served at once; more wait up to --queue-timeout for a slot, then get the failure answer. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l queue-timeout -d 'How long a client over --max-conns or a backend maxconn waits for a slot' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l idle-timeout -d 'Close connections with no bytes in either direction for this long. [default: off]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l allow -d 'Serve only clients in this network (CIDR, repeatable). [default: everyone]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l deny -d 'Refuse clients in this network (CIDR, repeatable); checked before --allow. [default: nobody]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l max-conns-per-ip -d 'Most open connections from one client IP. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l rate-per-ip -d 'New connections per second from one client IP, e.g. 20/s. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l per-ip-ipv6-prefix -d 'The per-IP limits count IPv6 clients per network of this prefix length (one host usually owns a /64); 128 counts each address' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l max-connection-age -d 'Close connections older than this, so long sessions move to new backends after a scale-up. [default: no limit]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l tcp-keepalive -d 'TCP keepalive on client and backend sockets: IDLE[,INTERVAL,COUNT], e.g. 60s or 60s,10s,6 (INTERVAL defaults to IDLE/6, COUNT to 6). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l tcp-user-timeout -d 'With --tcp-keepalive: close a connection whose sent bytes stay unacknowledged this long (TCP_USER_TIMEOUT; Linux sends no keepalive probes while bytes are unacknowledged); 0 or off for the kernel\'s retransmission limit (about 15 minutes). [default: IDLE + INTERVAL × COUNT]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l responses -d 'End a session once the backend sent N replies for every datagram the client sent (1 for DNS); 0 ends it once the datagram is forwarded. [default: none: only the idle timeout ends it]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l max-sessions -d 'Most sessions held at once; datagrams that would start another are dropped. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l max-sessions-per-ip -d 'Most sessions one client IP holds at once. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l datagram-rate-per-ip -d 'Datagrams per second one client IP may send, e.g. 100/s (burst of the same size); the rest are dropped. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l max-datagram-size -d 'Drop client datagrams larger than this many bytes (never cut them short)' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l tls-cert -d 'Terminate TLS with this certificate chain (PEM, leaf first); repeat with --tls-key pairwise for more certificates (chosen by SNI, the first is the default). [default: pass TLS through]' -r -F
complete -c tcplb -n "__fish_tcplb_needs_command" -l tls-key -d 'The private key (PEM) of the --tls-cert at the same position. [default: pass TLS through]' -r -F
complete -c tcplb -n "__fish_tcplb_needs_command" -l backend-ca -d 'Verify backends\' certificates against the CAs in this PEM file instead of the system\'s; implies --backend-tls. [default: the system\'s store]' -r -F
complete -c tcplb -n "__fish_tcplb_needs_command" -l admin -d 'Serve Prometheus /metrics and JSON /status on this address (e.g. 127.0.0.1:9090). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l admin-token-file -d 'Give write access to the control API over --admin to requests with `Authorization: Bearer TOKEN`, TOKEN read from this file at start. [default: the TCP endpoint is read-only]' -r -F
complete -c tcplb -n "__fish_tcplb_needs_command" -l admin-socket -d 'Also serve the admin endpoint on this Unix socket (mode 0600), with write access for every request. [default: off]' -r -F
complete -c tcplb -n "__fish_tcplb_needs_command" -l state-file -d 'Keep changes made through the control API in this JSON file, so they survive restarts. [default: in memory only]' -r -F
complete -c tcplb -n "__fish_tcplb_needs_command" -l config -d 'Read listeners and backends from this TOML file; flags given on the command line override it. SIGHUP re-reads it. [default: none: the flags alone]' -r -F
complete -c tcplb -n "__fish_tcplb_needs_command" -l drain-timeout -d 'On SIGINT/SIGTERM, let open connections finish for up to this long' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l shutdown-delay -d 'On SIGINT/SIGTERM, answer 503 on /ready at once but go on accepting for this long before the drain starts, so that keepalived, a BGP speaker or a Kubernetes probe takes this instance out first' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l upgrade-move-connections -d 'On SIGUSR2, once the new process serves, hand it the established passthrough connections (sockets, held bytes, counters) instead of draining them here; `false` drains them as on SIGTERM' -r -f -a "true\t''
false\t''"
complete -c tcplb -n "__fish_tcplb_needs_command" -l workers -d 'Worker threads serving connections, each with its own listening socket (SO_REUSEPORT); a busier worker hands new connections to a less loaded one. [default: one per core]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l splice -d 'Move bulk data with splice(2), zero-copy (Linux): `auto` once a connection shows bulk traffic, `on` always, `off` never' -r -f -a "off\t''
on\t''
auto\t''"
complete -c tcplb -n "__fish_tcplb_needs_command" -l resolver -d 'Resolve backend names with this DNS server, IP[:PORT] (port 53 by default). [default: the nameservers in /etc/resolv.conf]' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l access-log -d 'Write one line per finished connection to this file (reopened on SIGUSR1, for logrotate), to `stderr`, or `off`' -r
complete -c tcplb -n "__fish_tcplb_needs_command" -l access-log-format -d 'Access log lines as `text` (HAProxy tcplog-like fields) or `json` (JSON Lines)' -r -f -a "text\t''
json\t''"
complete -c tcplb -n "__fish_tcplb_needs_command" -l pid-file -d 'Keep the serving process\'s PID in this file (written atomically, taken over by the new process of an upgrade, removed at exit), for `kill -USR2 "$(cat PATH)"`. [default: none]' -r -F
complete -c tcplb -n "__fish_tcplb_needs_command" -l accept-proxy -d 'Require a PROXY protocol header (v1 or v2) from clients (tcplb behind another balancer)'
complete -c tcplb -n "__fish_tcplb_needs_command" -l per-datagram -d 'Pick a backend for every datagram rather than once per session, for stateless protocols (DNS, syslog)'
complete -c tcplb -n "__fish_tcplb_needs_command" -l backend-tls -d 'Speak TLS to the backends, verifying their certificates against the system\'s trust store (or --backend-ca) and the backend\'s host name'
complete -c tcplb -n "__fish_tcplb_needs_command" -l ready-requires-backends -d 'Make GET /ready answer 503 also while no listener has a usable backend (ready, up and not ejected). [default: off]'
complete -c tcplb -n "__fish_tcplb_needs_command" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_needs_command" -s V -l version -d 'Print version'
complete -c tcplb -n "__fish_tcplb_needs_command" -f -a "check" -d 'Validate a configuration as a start would, without starting'
complete -c tcplb -n "__fish_tcplb_needs_command" -f -a "ctl" -d 'Talk to a running tcplb\'s control API'
complete -c tcplb -n "__fish_tcplb_needs_command" -f -a "man" -d 'Print this manual page (roff), generated from the flags\' definitions'
complete -c tcplb -n "__fish_tcplb_needs_command" -f -a "completions" -d 'Print shell completions for tcplb and its commands'
complete -c tcplb -n "__fish_tcplb_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l listen -d 'Address to accept clients on: ADDR:PORT, [IPv6]:PORT, or a bare PORT' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l backlog -d 'Listen backlog: connections the kernel queues before we accept them' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l protocol -d '`tcp` (connections) or `udp` (datagrams, in sessions; see the UDP section)' -r -f -a "tcp\t''
udp\t''"
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l name -d 'The pool\'s name in the control API (/api/v1/pools/NAME). [default: the bound listen address]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -s b -l backend -d 'Backend HOST:PORT[=WEIGHT][,maxconn=N]; repeat the flag or separate backends with commas. A HOST that is a name is looked up again (A, or AAAA without A) and every address is a backend; srv:NAME takes ports and weights from SRV records. [default: 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l strategy -d 'How to choose a backend' -r -f -a "round-robin\t''
least-conn\t''
p2c\t''
hash\t''
maglev\t''"
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l connect-timeout -d 'Give up connecting to a backend after this long' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l retries -d 'After a failed connect, try up to this many other healthy backends' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l on-failure -d 'What a client gets when no backend can take it: `http` (a minimal 502/503 response) or `close` (just close, for non-HTTP protocols)' -r -f -a "http\t''
close\t''"
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l send-proxy -d 'Send a PROXY protocol header (v1 or v2) to backends, so they see the client\'s address. [default: off]' -r -f -a "v1\t''
v2\t''"
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l backup -d 'A backup backend, same syntax as --backend: it gets connections only while no primary backend is eligible. [default: none]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l slow-start -d 'A backend that becomes eligible again (recovered, added, out of drain or maintenance) ramps from 10% to its full share over this long. [default: off]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l hash-balance-factor -d 'With --strategy hash or maglev: no backend takes more open connections than this factor times the mean (bounded load, e.g. 1.25). [default: unbounded]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l resolve-interval -d 'Look backend names up again at least this often; a shorter DNS TTL brings the next lookup forward. A failed lookup keeps the backends found last and is retried after this long' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l resolve-ttl-min -d 'Never look a backend name up again sooner than this, however short its TTL (Consul answers with TTL 0)' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-interval -d 'Time between health checks of each backend' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-timeout -d 'A health check that takes longer than this fails' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l rise -d 'Consecutive passed checks that bring a DOWN backend back' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l fall -d 'Consecutive failures (checks or connects) that take a backend out' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-send -d 'Bytes a health check sends after connecting; escapes \\r \\n \\t \\\\ \\xNN. Example: \'PING\\r\\n\'. [default: none: a plain connect check]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-expect -d 'What the health check reply must hold (see --health-expect-match), e.g. \'+PONG\'. [default: none]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-expect-match -d 'How --health-expect matches what arrived: `prefix`, `contains` (anywhere in it, e.g. role:master) or `regex`' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-http -d 'An HTTP/1.1 check instead: `PATH` or `METHOD PATH`, e.g. \'OPTIONS /primary\' (Patroni\'s API, with --health-port 8008). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-udp -d 'A UDP check (UDP listeners): send this datagram (escapes as --health-send; may be empty); with --health-expect the reply must match, else any reply or silence passes and an ICMP port unreachable fails. [default: an empty datagram, on a UDP listener without a check of its own]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-http-host -d 'The Host header of --health-http. [default: the check target\'s IP:PORT]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-expect-status -d 'The statuses that pass --health-http: codes and classes, comma-separated, e.g. 200 or 200,3xx. [default: 2xx,3xx]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-expect-body -d 'Text the --health-http response body must contain. [default: any body]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-exec -d 'Run a program as the check, e.g. \'/usr/bin/pg_isready -h {host} -p {port}\': words split on spaces, no shell; exit 0 is up; killed at --health-timeout; its first line of output is the reason. [default: off]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l agent-port -d 'HAProxy\'s agent check: read the state and weight the agent on this port of each backend\'s check address reports (`75%`, `drain`, `down #why`). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l agent-send -d 'Bytes sent to the agent after connecting, e.g. \'web/a\\n\'. [default: none]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l agent-interval -d 'Time between agent checks of each backend' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l on-down -d 'What checks marking a backend down do to its open connections: `keep` them, or `close` them at once (HAProxy\'s shutdown-sessions)' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l on-backup-up -d 'What a primary marked up again does to the backups\' open connections: `keep` or `close`' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l panic-threshold -d 'While fewer than this percent of the ready primaries pass their checks, balance over all of them regardless (Envoy\'s panic threshold). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l max-fails -d 'Passive health: N failed connects within --fail-timeout take a backend out for --fail-timeout, before the prober notices. 0 is off' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l fail-timeout -d 'Window for --max-fails, and the first ejection\'s length; each ejection in a row lasts one more --fail-timeout' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l max-ejection-percent -d 'Passive health ejects at most this percent of the pool at once (always at least one backend)' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l max-ejection-time -d 'The longest a repeated ejection lasts' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l health-port -d 'Check every backend on this port instead of its traffic port, for health served beside the service. [default: the backend\'s port]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l max-conns -d 'Most client connections served at once; more wait up to --queue-timeout for a slot, then get the failure answer. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l queue-timeout -d 'How long a client over --max-conns or a backend maxconn waits for a slot' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l idle-timeout -d 'Close connections with no bytes in either direction for this long. [default: off]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l allow -d 'Serve only clients in this network (CIDR, repeatable). [default: everyone]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l deny -d 'Refuse clients in this network (CIDR, repeatable); checked before --allow. [default: nobody]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l max-conns-per-ip -d 'Most open connections from one client IP. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l rate-per-ip -d 'New connections per second from one client IP, e.g. 20/s. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l per-ip-ipv6-prefix -d 'The per-IP limits count IPv6 clients per network of this prefix length (one host usually owns a /64); 128 counts each address' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l max-connection-age -d 'Close connections older than this, so long sessions move to new backends after a scale-up. [default: no limit]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l tcp-keepalive -d 'TCP keepalive on client and backend sockets: IDLE[,INTERVAL,COUNT], e.g. 60s or 60s,10s,6 (INTERVAL defaults to IDLE/6, COUNT to 6). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l tcp-user-timeout -d 'With --tcp-keepalive: close a connection whose sent bytes stay unacknowledged this long (TCP_USER_TIMEOUT; Linux sends no keepalive probes while bytes are unacknowledged); 0 or off for the kernel\'s retransmission limit (about 15 minutes). [default: IDLE + INTERVAL × COUNT]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l responses -d 'End a session once the backend sent N replies for every datagram the client sent (1 for DNS); 0 ends it once the datagram is forwarded. [default: none: only the idle timeout ends it]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l max-sessions -d 'Most sessions held at once; datagrams that would start another are dropped. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l max-sessions-per-ip -d 'Most sessions one client IP holds at once. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l datagram-rate-per-ip -d 'Datagrams per second one client IP may send, e.g. 100/s (burst of the same size); the rest are dropped. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l max-datagram-size -d 'Drop client datagrams larger than this many bytes (never cut them short)' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l tls-cert -d 'Terminate TLS with this certificate chain (PEM, leaf first); repeat with --tls-key pairwise for more certificates (chosen by SNI, the first is the default). [default: pass TLS through]' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l tls-key -d 'The private key (PEM) of the --tls-cert at the same position. [default: pass TLS through]' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l backend-ca -d 'Verify backends\' certificates against the CAs in this PEM file instead of the system\'s; implies --backend-tls. [default: the system\'s store]' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l admin -d 'Serve Prometheus /metrics and JSON /status on this address (e.g. 127.0.0.1:9090). [default: off]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l admin-token-file -d 'Give write access to the control API over --admin to requests with `Authorization: Bearer TOKEN`, TOKEN read from this file at start. [default: the TCP endpoint is read-only]' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l admin-socket -d 'Also serve the admin endpoint on this Unix socket (mode 0600), with write access for every request. [default: off]' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l state-file -d 'Keep changes made through the control API in this JSON file, so they survive restarts. [default: in memory only]' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l config -d 'Read listeners and backends from this TOML file; flags given on the command line override it. SIGHUP re-reads it. [default: none: the flags alone]' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l drain-timeout -d 'On SIGINT/SIGTERM, let open connections finish for up to this long' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l shutdown-delay -d 'On SIGINT/SIGTERM, answer 503 on /ready at once but go on accepting for this long before the drain starts, so that keepalived, a BGP speaker or a Kubernetes probe takes this instance out first' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l upgrade-move-connections -d 'On SIGUSR2, once the new process serves, hand it the established passthrough connections (sockets, held bytes, counters) instead of draining them here; `false` drains them as on SIGTERM' -r -f -a "true\t''
false\t''"
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l workers -d 'Worker threads serving connections, each with its own listening socket (SO_REUSEPORT); a busier worker hands new connections to a less loaded one. [default: one per core]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l splice -d 'Move bulk data with splice(2), zero-copy (Linux): `auto` once a connection shows bulk traffic, `on` always, `off` never' -r -f -a "off\t''
on\t''
auto\t''"
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l resolver -d 'Resolve backend names with this DNS server, IP[:PORT] (port 53 by default). [default: the nameservers in /etc/resolv.conf]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l access-log -d 'Write one line per finished connection to this file (reopened on SIGUSR1, for logrotate), to `stderr`, or `off`' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l access-log-format -d 'Access log lines as `text` (HAProxy tcplog-like fields) or `json` (JSON Lines)' -r -f -a "text\t''
json\t''"
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l pid-file -d 'Keep the serving process\'s PID in this file (written atomically, taken over by the new process of an upgrade, removed at exit), for `kill -USR2 "$(cat PATH)"`. [default: none]' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l accept-proxy -d 'Require a PROXY protocol header (v1 or v2) from clients (tcplb behind another balancer)'
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l per-datagram -d 'Pick a backend for every datagram rather than once per session, for stateless protocols (DNS, syslog)'
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l backend-tls -d 'Speak TLS to the backends, verifying their certificates against the system\'s trust store (or --backend-ca) and the backend\'s host name'
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -l ready-requires-backends -d 'Make GET /ready answer 503 also while no listener has a usable backend (ready, up and not ejected). [default: off]'
complete -c tcplb -n "__fish_tcplb_using_subcommand check" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -s V -l version -d 'Print version'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "pools" -d 'List the pools'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "backends" -d 'List the backends of POOL, or of every pool'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "health" -d 'Show the health of the backends of POOL, or of every pool: the state in force, health and since when, the last check, the agent\'s word, and the reason'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "drain" -d 'Stop new connections to BACKEND; open ones finish (or are closed at --deadline)'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "maintenance" -d 'Take BACKEND out of rotation and stop checking it'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "ready" -d '`ready POOL BACKEND`: put BACKEND back in rotation. `ready on|off`: this instance\'s GET /ready (off: 503 until on, so keepalived, BGP or a probe sends clients elsewhere). `ready`: show it'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "weight" -d 'Set BACKEND\'s weight (1 to 10000)'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "add" -d 'Add a backend at HOST:PORT'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "connections" -d 'List open connections: id, client, listener, backend, age, idle time, bytes each way'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "close" -d 'Close open connection ID (both sides, at once)'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "close-connections" -d 'Close every open connection to BACKEND'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "remove" -d 'Drain BACKEND, then remove it when its last connection ends'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and not __fish_seen_subcommand_from pools backends health drain maintenance ready weight add connections close close-connections remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from pools" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from pools" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from pools" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from pools" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from pools" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from backends" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from backends" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from backends" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from backends" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from backends" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from health" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from health" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from health" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from health" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from health" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l deadline -d 'Close what is still open after this long, e.g. 5m' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from drain" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from maintenance" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from maintenance" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from maintenance" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from maintenance" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from maintenance" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from ready" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from ready" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from ready" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from ready" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from ready" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from weight" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from weight" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from weight" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from weight" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from weight" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from add" -l weight -d 'Its share of connections. [default: 1]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from add" -l maxconn -d 'Most connections open to it at once. [default: unlimited]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from add" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from add" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from add" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from add" -l backup -d 'Use it only while no primary backend is usable'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from add" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -l listener -d 'Only this listener\'s (its pool name). [default: every listener]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -l backend -d 'Only those to this backend. [default: any]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -l limit -d 'At most this many (one page)' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -l after -d 'Only connections with an id above this (the next page)' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -l all -d 'Every page, not just one'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from connections" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close-connections" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close-connections" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close-connections" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close-connections" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from close-connections" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l deadline -d 'Close what is still open after this long, e.g. 5m' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l admin -d 'An admin endpoint: HOST:PORT, or unix:PATH for the admin socket. Repeat it to address several instances at once. [default: 127.0.0.1:9090]' -r
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l admin-file -d 'Address every instance listed in this file too: one admin endpoint a line (HOST:PORT or unix:PATH); blank lines and `#` comments are skipped' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l token-file -d 'Send the bearer token in this file (the server\'s --admin-token-file)' -r -F
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from remove" -l json -d 'Print the API\'s JSON instead of a table or a line'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "pools" -d 'List the pools'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "backends" -d 'List the backends of POOL, or of every pool'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "health" -d 'Show the health of the backends of POOL, or of every pool: the state in force, health and since when, the last check, the agent\'s word, and the reason'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "drain" -d 'Stop new connections to BACKEND; open ones finish (or are closed at --deadline)'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "maintenance" -d 'Take BACKEND out of rotation and stop checking it'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "ready" -d '`ready POOL BACKEND`: put BACKEND back in rotation. `ready on|off`: this instance\'s GET /ready (off: 503 until on, so keepalived, BGP or a probe sends clients elsewhere). `ready`: show it'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "weight" -d 'Set BACKEND\'s weight (1 to 10000)'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a backend at HOST:PORT'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "connections" -d 'List open connections: id, client, listener, backend, age, idle time, bytes each way'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "close" -d 'Close open connection ID (both sides, at once)'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "close-connections" -d 'Close every open connection to BACKEND'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Drain BACKEND, then remove it when its last connection ends'
complete -c tcplb -n "__fish_tcplb_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcplb -n "__fish_tcplb_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcplb -n "__fish_tcplb_using_subcommand completions" -s h -l help -d 'Print help'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and not __fish_seen_subcommand_from check ctl man completions help" -f -a "check" -d 'Validate a configuration as a start would, without starting'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and not __fish_seen_subcommand_from check ctl man completions help" -f -a "ctl" -d 'Talk to a running tcplb\'s control API'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and not __fish_seen_subcommand_from check ctl man completions help" -f -a "man" -d 'Print this manual page (roff), generated from the flags\' definitions'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and not __fish_seen_subcommand_from check ctl man completions help" -f -a "completions" -d 'Print shell completions for tcplb and its commands'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and not __fish_seen_subcommand_from check ctl man completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "pools" -d 'List the pools'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "backends" -d 'List the backends of POOL, or of every pool'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "health" -d 'Show the health of the backends of POOL, or of every pool: the state in force, health and since when, the last check, the agent\'s word, and the reason'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "drain" -d 'Stop new connections to BACKEND; open ones finish (or are closed at --deadline)'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "maintenance" -d 'Take BACKEND out of rotation and stop checking it'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "ready" -d '`ready POOL BACKEND`: put BACKEND back in rotation. `ready on|off`: this instance\'s GET /ready (off: 503 until on, so keepalived, BGP or a probe sends clients elsewhere). `ready`: show it'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "weight" -d 'Set BACKEND\'s weight (1 to 10000)'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "add" -d 'Add a backend at HOST:PORT'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "connections" -d 'List open connections: id, client, listener, backend, age, idle time, bytes each way'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "close" -d 'Close open connection ID (both sides, at once)'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "close-connections" -d 'Close every open connection to BACKEND'
complete -c tcplb -n "__fish_tcplb_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "remove" -d 'Drain BACKEND, then remove it when its last connection ends'
complete -c tcplb -n "__fish_tcplb_using_subcommand completions" -f -a "bash zsh fish"
