//! Why a hook did what it did: one enum shared by the kernel's per-CPU counters,
//! userspace metrics and the CLI.

/// Index into the per-CPU `STATS` array. Append only: the numbers are part of the
/// pinned-map layout.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A connect/sendmsg to a service frontend was translated to a backend.
    Translated = 0,
    /// The destination is not a service frontend; the socket call is left alone.
    NotAService = 1,
    /// The service exists but has no usable endpoint; the call was refused.
    NoBackend = 2,
    /// A slot pointed at a backend id that is not in the backend map (a torn
    /// update or drift); the call was refused rather than sent nowhere.
    BackendMissing = 3,
    /// Slot 0 said a slot existed that is not in the map; the call was refused.
    SlotMissing = 4,
    /// Writing the socket reverse-NAT entry failed (LRU full, for example); the
    /// translation still happened, but replies may show the backend address.
    SockRevNatUpdateFailed = 5,
    /// A reply's source (recvmsg) was rewritten from the backend to the frontend.
    ReplyRevNatted = 6,
    /// A peer address (getpeername) was rewritten from the backend to the frontend.
    PeerRevNatted = 7,
    /// The frontend's protocol is not one we balance (only TCP and UDP are).
    UnsupportedProtocol = 8,
    /// Session affinity sent the client to the backend it used before.
    AffinityHit = 9,
    /// Writing the affinity entry failed; the connection still went through.
    AffinityUpdateFailed = 10,
    /// tc: a new flow to a frontend was translated to a backend (conntrack entries made).
    TcDnat = 11,
    /// tc: a packet of a tracked flow was rewritten towards its backend.
    TcCtForward = 12,
    /// tc: a reply was rewritten back to come from the frontend (ingress or egress).
    TcCtReply = 13,
    /// tc: neither a frontend nor a tracked flow; the packet passed untouched.
    TcPass = 14,
    /// tc: not IPv4 or IPv6 (ARP, for example); passed untouched.
    TcPassNonIp = 15,
    /// tc: not TCP or UDP (or an IPv6 extension header first); passed untouched.
    TcPassProtocol = 16,
    /// tc: headers shorter than they claim to be, or malformed; passed untouched for the stack to drop.
    TcTruncated = 17,
    /// tc: a fragment of neither TCP nor UDP (ICMP, for example); passed untouched.
    TcFragmentPassed = 18,
    /// tc: a fragment that cannot be translated like the rest of its
    /// datagram: a later fragment to a frontend whose first fragment was not
    /// translated (no conntrack entry), or a first fragment whose ports could
    /// not be recorded (`FRAG_V4`/`FRAG_V6`); dropped.
    TcFragmentDropped = 19,
    /// tc: a ClusterIP frontend on a device without `CLUSTER_IP`; passed untouched.
    TcClusterIpSkipped = 20,
    /// tc: an `externalTrafficPolicy: Local` frontend with no local endpoint; dropped.
    TcEtpLocalDropped = 21,
    /// tc: a frontend with no backend; a TCP RST (TCP) or an ICMP/ICMPv6 port-unreachable (UDP) was sent back.
    TcRejected = 22,
    /// tc: the reject could not be built (IPv4 options, a segment carrying RST, helper failure); dropped.
    TcRejectFailed = 23,
    /// tc: the flow needs SNAT but `NODE_CFG` has no address of its family; dropped.
    TcNoSnatAddress = 24,
    /// tc: no free SNAT port was found in a few tries; dropped.
    TcSnatPortsExhausted = 25,
    /// tc: a conntrack entry could not be written; dropped.
    TcCtUpdateFailed = 26,
    /// tc: a packet rewrite helper failed; dropped.
    TcRewriteFailed = 27,
    /// tc: a tracked flow's backend was removed; the flow was sent to a live backend.
    TcRebalanced = 28,
    /// tc: an ICMP error (unreachable, time exceeded, too big) about no tracked flow; passed untouched.
    TcIcmpErrorPassed = 29,
    /// tc: an ICMP error about a translated flow: the outer destination and the quoted header were translated back.
    TcIcmpErrorTranslated = 30,
    /// tc: a translated packet was sent straight out of the device the FIB
    /// lookup chose (`bpf_redirect` with the FIB's MACs), TTL/hop limit decremented.
    TcFibRedirected = 31,
    /// tc: as `tc_fib_redirected`, but the next hop's neighbour was not
    /// resolved yet, so `bpf_redirect_neigh` resolves it.
    TcFibRedirectedNeigh = 32,
    /// tc: the FIB lookup for a translated packet found no route to forward
    /// it on (a local or not unicast destination, or no route); passed to the stack.
    TcFibNotForwarded = 33,
    /// tc: forwarding is off on the device a translated packet came in on; passed to the stack.
    TcFibForwardingOff = 34,
    /// tc: a translated packet's TTL/hop limit would expire when forwarded; passed to the stack (which answers it).
    TcFibTtlExpired = 35,
    /// tc: the FIB lookup for a translated packet did not give a next hop
    /// (unreachable, blackhole, prohibited, needs fragmenting, helper error); passed to the stack.
    TcFibPassed = 36,
    /// tc: a new flow to a LoadBalancer frontend from a source outside its
    /// `loadBalancerSourceRanges`; dropped.
    TcSourceRangeDropped = 37,
    /// tc: a new flow to a ClusterIP from a source the local-traffic detector
    /// (`--detect-local-mode`) finds off-cluster: translated on whatever
    /// device it arrived on and SNATed to the node (kube-proxy's
    /// "masquerade off-cluster traffic to a service VIP"). Counted with `tc_dnat`.
    TcClusterIpMasqueraded = 38,
    /// tc: `--masquerade-all`: a new flow to a ClusterIP from an in-cluster
    /// (or undetected) source was SNATed to the node. Counted with `tc_dnat`.
    TcMasqueradeAll = 39,
    /// socket hooks (`sock_egress`): the first packet of a socket translated
    /// to a LoadBalancer frontend had a source (the address the kernel
    /// chose) outside its `loadBalancerSourceRanges`; dropped.
    SockSourceRangeDropped = 40,
    /// socket hooks: the socket's source-check record (`SOCK_SRC_CHECK`)
    /// could not be written; the call is refused (fails closed).
    SockSourceCheckFailed = 41,
    /// tc: a RST or ICMP error was due, but this CPU's reject budget was spent
    /// (`reject_limit`): the packet is dropped.
    TcRejectRateLimited = 42,
    /// tc: a TCP/UDP fragment after the first (no transport header) whose
    /// first fragment was seen: its ports came from `FRAG_V4`/`FRAG_V6`, and
    /// it went through conntrack like the rest of its datagram (also counted
    /// under that outcome: `tc_ct_forward`, `tc_pass`, ...).
    TcFragmentForwarded = 43,
    /// tc: a TCP/UDP fragment after the first whose first fragment was not
    /// seen (it arrived later, was lost, or its record was evicted): its
    /// ports are unknown, so it is dropped, as Cilium does.
    TcFragmentUnknown = 44,
    /// tc: a new flow's conntrack entries were written to the pending map
    /// (`CT_PENDING_*`), where they stay until the flow is answered.
    TcCtPendingCreated = 45,
    /// tc: a pending flow was answered (TCP: a client's packet without SYN or
    /// RST; UDP: a reply) and its entries moved to the established map
    /// (`CT_*`).
    TcCtPromoted = 46,
    /// tc: a new SNATed flow took a source port whose pending entry was idle
    /// past its timeout (a port held by an unanswered flow).
    TcSnatPortReclaimed = 47,
    /// tc: a new flow to an external frontend took its backend from the
    /// frontend's Maglev table (`--lb-algorithm=maglev`). Counted with `tc_dnat`.
    MaglevPick = 48,
    /// tc: a TCP packet without SYN that no conntrack entry knows (a flow
    /// that began on another node, or whose entry was evicted) was
    /// translated as a new flow (by Maglev, the same backend every node
    /// picks). Counted with `tc_dnat`.
    TcMidFlowMiss = 49,
    /// tc: a new flow's reply tuple was held by a live conntrack entry of
    /// another flow (a client reusing its source port towards another
    /// frontend with the same backend, without SNAT): the new flow's source
    /// port was remapped, as netfilter's implicit source NAT does, so the
    /// older flow's entries stay as they are. Counted with `tc_dnat`.
    TcCtReplyClash = 50,
    /// tc: `tc_ingress` could not tail-call its family's program
    /// (`tc_ingress4`/`tc_ingress6`: its `TC_TAIL` slot is empty), so the
    /// packet was not looked at: passed untouched, as when no tc program is
    /// attached. The daemon fills the slots before it attaches `tc_ingress`,
    /// and again at every reconcile.
    TcTailCallFailed = 51,
    /// tc: as `tc_fib_redirected`, but the FIB's device is a veth (or netkit)
    /// whose peer is in another network namespace (`DEVICES` flag
    /// `PEER_NETNS`): `bpf_redirect_peer` puts the packet straight into the
    /// peer's ingress, skipping the device's egress and the veth's backlog queue.
    TcFibRedirectedPeer = 52,
    /// tc (`--lb-mode=dsr`, the client's node): a flow's packet was sent to
    /// its backend on another node by direct server return: DNATed, not
    /// SNATed, the frontend's address and port carried in an IPv4 option or
    /// an IPv6 Destination Options header (`tc_dsr4`/`tc_dsr6`).
    TcDsrSent = 53,
    /// tc (the backend's node): a packet carrying a frontend in a DSR option
    /// was seen; its flow's replies will come from that frontend.
    TcDsrRecorded = 54,
    /// tc egress (the backend's node): a backend's reply to a DSR flow was
    /// rewritten to come from the frontend, and goes straight to the client.
    TcDsrReply = 55,
    /// tc: a DSR option could not be added (no room in the header, a helper
    /// error): the packet was dropped.
    TcDsrFailed = 56,
    /// xdp: a client's packet of an established flow was rewritten to its
    /// backend and sent out of the FIB's next hop (`XDP_TX` or redirect),
    /// never reaching tc.
    XdpCtForward = 57,
    /// xdp: a backend's reply of an established flow was rewritten back to
    /// frontend → client and sent out of the FIB's next hop.
    XdpCtReply = 58,
    /// xdp: passed to tc unchanged: not an IPv4/IPv6 TCP or UDP packet XDP
    /// handles (options, extension headers, fragments, ICMP, truncated), or
    /// no fresh established conntrack entry (a new or pending flow).
    XdpPass = 59,
    /// xdp: passed to tc unchanged because tc's conntrack moves the flow's
    /// state (TCP SYN, FIN or RST, or an entry still `SYN_ONLY`).
    XdpPassTcState = 60,
    /// xdp: passed to tc unchanged: the FIB gave no resolved next hop (local
    /// destination, no neighbour yet, forwarding off, too big) or the TTL
    /// would expire.
    XdpFibPassed = 61,
}

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; 62] = [
        Reason::Translated,
        Reason::NotAService,
        Reason::NoBackend,
        Reason::BackendMissing,
        Reason::SlotMissing,
        Reason::SockRevNatUpdateFailed,
        Reason::ReplyRevNatted,
        Reason::PeerRevNatted,
        Reason::UnsupportedProtocol,
        Reason::AffinityHit,
        Reason::AffinityUpdateFailed,
        Reason::TcDnat,
        Reason::TcCtForward,
        Reason::TcCtReply,
        Reason::TcPass,
        Reason::TcPassNonIp,
        Reason::TcPassProtocol,
        Reason::TcTruncated,
        Reason::TcFragmentPassed,
        Reason::TcFragmentDropped,
        Reason::TcClusterIpSkipped,
        Reason::TcEtpLocalDropped,
        Reason::TcRejected,
        Reason::TcRejectFailed,
        Reason::TcNoSnatAddress,
        Reason::TcSnatPortsExhausted,
        Reason::TcCtUpdateFailed,
        Reason::TcRewriteFailed,
        Reason::TcRebalanced,
        Reason::TcIcmpErrorPassed,
        Reason::TcIcmpErrorTranslated,
        Reason::TcFibRedirected,
        Reason::TcFibRedirectedNeigh,
        Reason::TcFibNotForwarded,
        Reason::TcFibForwardingOff,
        Reason::TcFibTtlExpired,
        Reason::TcFibPassed,
        Reason::TcSourceRangeDropped,
        Reason::TcClusterIpMasqueraded,
        Reason::TcMasqueradeAll,
        Reason::SockSourceRangeDropped,
        Reason::SockSourceCheckFailed,
        Reason::TcRejectRateLimited,
        Reason::TcFragmentForwarded,
        Reason::TcFragmentUnknown,
        Reason::TcCtPendingCreated,
        Reason::TcCtPromoted,
        Reason::TcSnatPortReclaimed,
        Reason::MaglevPick,
        Reason::TcMidFlowMiss,
        Reason::TcCtReplyClash,
        Reason::TcTailCallFailed,
        Reason::TcFibRedirectedPeer,
        Reason::TcDsrSent,
        Reason::TcDsrRecorded,
        Reason::TcDsrReply,
        Reason::TcDsrFailed,
        Reason::XdpCtForward,
        Reason::XdpCtReply,
        Reason::XdpPass,
        Reason::XdpPassTcState,
        Reason::XdpFibPassed,
    ];
    /// Number of reasons: the size of the `STATS` array.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// A stable snake_case name for metrics and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Translated => "translated",
            Reason::NotAService => "not_a_service",
            Reason::NoBackend => "no_backend",
            Reason::BackendMissing => "backend_missing",
            Reason::SlotMissing => "slot_missing",
            Reason::SockRevNatUpdateFailed => "sock_revnat_update_failed",
            Reason::ReplyRevNatted => "reply_revnatted",
            Reason::PeerRevNatted => "peer_revnatted",
            Reason::UnsupportedProtocol => "unsupported_protocol",
            Reason::AffinityHit => "affinity_hit",
            Reason::AffinityUpdateFailed => "affinity_update_failed",
            Reason::TcDnat => "tc_dnat",
            Reason::TcCtForward => "tc_ct_forward",
            Reason::TcCtReply => "tc_ct_reply",
            Reason::TcPass => "tc_pass",
            Reason::TcPassNonIp => "tc_pass_non_ip",
            Reason::TcPassProtocol => "tc_pass_protocol",
            Reason::TcTruncated => "tc_truncated",
            Reason::TcFragmentPassed => "tc_fragment_passed",
            Reason::TcFragmentDropped => "tc_fragment_dropped",
            Reason::TcClusterIpSkipped => "tc_cluster_ip_skipped",
            Reason::TcEtpLocalDropped => "tc_etp_local_dropped",
            Reason::TcRejected => "tc_rejected",
            Reason::TcRejectFailed => "tc_reject_failed",
            Reason::TcNoSnatAddress => "tc_no_snat_address",
            Reason::TcSnatPortsExhausted => "tc_snat_ports_exhausted",
            Reason::TcCtUpdateFailed => "tc_ct_update_failed",
            Reason::TcRewriteFailed => "tc_rewrite_failed",
            Reason::TcRebalanced => "tc_rebalanced",
            Reason::TcIcmpErrorPassed => "tc_icmp_error_passed",
            Reason::TcIcmpErrorTranslated => "tc_icmp_error_translated",
            Reason::TcFibRedirected => "tc_fib_redirected",
            Reason::TcFibRedirectedNeigh => "tc_fib_redirected_neigh",
            Reason::TcFibNotForwarded => "tc_fib_not_forwarded",
            Reason::TcFibForwardingOff => "tc_fib_forwarding_off",
            Reason::TcFibTtlExpired => "tc_fib_ttl_expired",
            Reason::TcFibPassed => "tc_fib_passed",
            Reason::TcSourceRangeDropped => "tc_source_range_dropped",
            Reason::TcClusterIpMasqueraded => "tc_cluster_ip_masqueraded",
            Reason::TcMasqueradeAll => "tc_masquerade_all",
            Reason::SockSourceRangeDropped => "sock_source_range_dropped",
            Reason::SockSourceCheckFailed => "sock_source_check_failed",
            Reason::TcRejectRateLimited => "tc_reject_rate_limited",
            Reason::TcFragmentForwarded => "tc_fragment_forwarded",
            Reason::TcFragmentUnknown => "tc_fragment_unknown",
            Reason::TcCtPendingCreated => "tc_ct_pending_created",
            Reason::TcCtPromoted => "tc_ct_promoted",
            Reason::TcSnatPortReclaimed => "tc_snat_port_reclaimed",
            Reason::MaglevPick => "maglev_pick",
            Reason::TcMidFlowMiss => "tc_mid_flow_miss",
            Reason::TcCtReplyClash => "tc_ct_reply_clash",
            Reason::TcTailCallFailed => "tc_tail_call_failed",
            Reason::TcFibRedirectedPeer => "tc_fib_redirected_peer",
            Reason::TcDsrSent => "tc_dsr_sent",
            Reason::TcDsrRecorded => "tc_dsr_recorded",
            Reason::TcDsrReply => "tc_dsr_reply",
            Reason::TcDsrFailed => "tc_dsr_failed",
            Reason::XdpCtForward => "xdp_ct_forward",
            Reason::XdpCtReply => "xdp_ct_reply",
            Reason::XdpPass => "xdp_pass",
            Reason::XdpPassTcState => "xdp_pass_tc_state",
            Reason::XdpFibPassed => "xdp_fib_passed",
        }
    }
}

const _: () = assert!(Reason::COUNT <= crate::capacity::STATS);
