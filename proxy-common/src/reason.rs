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
}

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; 11] = [
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
        }
    }
}

const _: () = assert!(Reason::COUNT <= crate::capacity::STATS);
