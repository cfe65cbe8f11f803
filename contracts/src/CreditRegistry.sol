// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {PoseidonT2} from "poseidon-solidity/PoseidonT2.sol";
import {PoseidonT3} from "poseidon-solidity/PoseidonT3.sol";

/// @title funion's credit registry
/// @notice A deposit is paid in ether: `limit` tickets per credit period at
/// `stakePerTicket` each (the double-spend stake D, which whoever reveals a
/// double spender's secret receives) plus a policy stake S (which the
/// policy key can burn, never pay out). Each deposit puts its rate
/// commitment Poseidon(Poseidon(k), limit) into a depth-20 Poseidon tree
/// whose root is the one zerokit's RLN circuit proves membership in; the
/// roots of the last `rootValidity` seconds stay acceptable.
contract CreditRegistry {
    /// The BN254 scalar field: commitments and secrets live below it.
    uint256 internal constant FIELD =
        21888242871839275222246405745257275088548364400416034343698204186575808495617;
    /// Depth of the tree (2^20 leaves), fixed by the circuit.
    uint256 public constant DEPTH = 20;

    /// Where a deposit stands. Its leaf is in the tree while it is Active
    /// and not slashed.
    enum State {
        None,
        Active,
        Withdrawing,
        Closed
    }

    /// One deposit, keyed by its identity commitment Poseidon(k).
    struct Deposit {
        address owner;
        uint32 index;
        uint32 limit;
        State state;
        bool slashed;
        bool policyBurned;
        uint64 claimableAt;
        uint128 doubleSpendStake;
        uint128 policyStake;
    }

    /// Wei of double-spend stake per ticket of the limit.
    uint256 public immutable stakePerTicket;
    /// Smallest policy stake, wei.
    uint256 public immutable minPolicyStake;
    /// Seconds between a withdrawal request and its claim.
    uint64 public immutable withdrawDelay;
    /// Seconds a replaced root stays acceptable.
    uint64 public immutable rootValidity;
    /// The only address that may burn policy stakes.
    address public immutable policy;

    /// Deposits by identity commitment.
    mapping(uint256 => Deposit) internal deposits;
    /// Tree nodes by `level << 32 | position`; the root is `root`.
    mapping(uint256 => uint256) internal nodes;
    /// The empty subtree at each level.
    uint256[DEPTH] internal zeros;
    /// Leaves handed out so far.
    uint32 public nextIndex;
    /// The current root.
    uint256 public root;
    /// When each replaced root stopped being current.
    mapping(uint256 => uint64) public replacedAt;
    /// Slash commitments keccak256(abi.encode(secret, revealer)) and the
    /// block each was made in.
    mapping(bytes32 => uint256) public slashCommits;
    /// Wei of policy stakes burned: locked here for good.
    uint256 public burned;

    /// A deposit was paid and its leaf inserted.
    event Deposited(
        uint256 indexed idCommitment,
        address indexed owner,
        uint32 index,
        uint32 limit,
        uint256 rateCommitment,
        uint256 doubleSpendStake,
        uint256 policyStake
    );
    /// The root changed; `previous` stays acceptable for `rootValidity`.
    event RootChanged(uint256 root, uint256 previous);
    /// Someone committed to revealing a secret.
    event SlashCommitted(bytes32 indexed commitment, address indexed revealer);
    /// A double spender's secret was revealed: D went to `revealer`.
    event Slashed(uint256 indexed idCommitment, address indexed revealer, uint256 paid);
    /// The policy stake was burned; `evidenceHash` names the evidence.
    event PolicyBurned(uint256 indexed idCommitment, bytes32 evidenceHash, uint256 amount);
    /// The owner asked for the stakes back; the leaf left the tree.
    event WithdrawRequested(uint256 indexed idCommitment, uint64 claimableAt);
    /// The owner took back what was left of the stakes.
    event Withdrawn(uint256 indexed idCommitment, address indexed owner, uint256 amount);

    constructor(
        uint256 stakePerTicket_,
        uint256 minPolicyStake_,
        uint64 withdrawDelay_,
        uint64 rootValidity_,
        address policy_
    ) {
        require(stakePerTicket_ > 0, "stake per ticket must be positive");
        require(policy_ != address(0), "name a policy address");
        stakePerTicket = stakePerTicket_;
        minPolicyStake = minPolicyStake_;
        withdrawDelay = withdrawDelay_;
        rootValidity = rootValidity_;
        policy = policy_;
        uint256 zero = 0;
        for (uint256 level = 0; level < DEPTH; level++) {
            zeros[level] = zero;
            zero = PoseidonT3.hash([zero, zero]);
        }
        root = zero;
    }

    /// @notice Deposits for `limit` tickets per period. `msg.value` must be
    /// limit × stakePerTicket (D) plus a policy stake S of at least
    /// minPolicyStake.
    function deposit(uint256 idCommitment, uint32 limit) external payable returns (uint32 index) {
        require(idCommitment < FIELD, "the commitment is not a field element");
        require(limit > 0, "the limit must be positive");
        require(deposits[idCommitment].state == State.None, "this identity already deposited");
        require(nextIndex < (1 << DEPTH), "the tree is full");
        uint256 d = uint256(limit) * stakePerTicket;
        require(msg.value >= d + minPolicyStake, "pay limit x stakePerTicket plus the policy stake");
        uint256 s = msg.value - d;
        index = nextIndex;
        nextIndex = index + 1;
        uint256 leaf = PoseidonT3.hash([idCommitment, uint256(limit)]);
        deposits[idCommitment] = Deposit({
            owner: msg.sender,
            index: index,
            limit: limit,
            state: State.Active,
            slashed: false,
            policyBurned: false,
            claimableAt: 0,
            doubleSpendStake: uint128(d),
            policyStake: uint128(s)
        });
        emit Deposited(idCommitment, msg.sender, index, limit, leaf, d, s);
        _setLeaf(index, leaf);
    }

    /// @notice The first half of a slash: commit to a secret without
    /// showing it, so that nobody watching the mempool can take the reveal.
    function commitSlash(bytes32 commitment) external {
        require(slashCommits[commitment] == 0, "already committed");
        slashCommits[commitment] = block.number;
        emit SlashCommitted(commitment, msg.sender);
    }

    /// @notice The second half, in a later block: reveals the secret k of a
    /// double spender; the double-spend stake goes to the sender, the leaf
    /// leaves the tree. Works during a withdrawal's delay too.
    function revealSlash(uint256 secret) external returns (uint256 paid) {
        require(secret < FIELD, "the secret is not a field element");
        bytes32 commitment = keccak256(abi.encode(secret, msg.sender));
        uint256 committedAt = slashCommits[commitment];
        require(committedAt != 0, "no commitment for this secret from this sender");
        require(committedAt < block.number, "reveal in a later block than the commitment");
        delete slashCommits[commitment];
        uint256 idCommitment = PoseidonT2.hash([secret]);
        Deposit storage d = deposits[idCommitment];
        require(d.state != State.None, "no deposit has this secret");
        require(d.state != State.Closed, "the deposit is withdrawn");
        require(!d.slashed, "already slashed");
        bool inTree = d.state == State.Active;
        d.slashed = true;
        paid = d.doubleSpendStake;
        emit Slashed(idCommitment, msg.sender, paid);
        if (inTree) {
            _setLeaf(d.index, 0);
        }
        (bool ok, ) = payable(msg.sender).call{value: paid}("");
        require(ok, "paying the revealer failed");
    }

    /// @notice Burns a deposit's policy stake: it stays in this contract,
    /// which has no way to pay it out, and is paid to nobody (not to the
    /// policy address, not to a provider). Only the policy address may.
    function burn(uint256 idCommitment, bytes32 evidenceHash) external {
        require(msg.sender == policy, "only the policy address burns");
        require(evidenceHash != bytes32(0), "an evidence hash is required");
        Deposit storage d = deposits[idCommitment];
        require(d.state != State.None, "no such deposit");
        require(d.state != State.Closed, "the deposit is withdrawn");
        require(!d.policyBurned, "the policy stake is already burned");
        d.policyBurned = true;
        uint256 amount = d.policyStake;
        burned += amount;
        emit PolicyBurned(idCommitment, evidenceHash, amount);
    }

    /// @notice Starts a withdrawal: the leaf leaves the tree now, the
    /// stakes can be claimed after withdrawDelay (slashing still works).
    function requestWithdraw(uint256 idCommitment) external {
        Deposit storage d = deposits[idCommitment];
        require(d.state != State.None, "no such deposit");
        require(d.owner == msg.sender, "only the owner withdraws");
        require(d.state == State.Active, "already withdrawing or withdrawn");
        bool inTree = !d.slashed;
        d.state = State.Withdrawing;
        d.claimableAt = uint64(block.timestamp) + withdrawDelay;
        emit WithdrawRequested(idCommitment, d.claimableAt);
        if (inTree) {
            _setLeaf(d.index, 0);
        }
    }

    /// @notice Pays the owner what is left (D unless slashed, S unless
    /// burned) once the delay is over.
    function claim(uint256 idCommitment) external returns (uint256 amount) {
        Deposit storage d = deposits[idCommitment];
        require(d.owner == msg.sender, "only the owner withdraws");
        require(d.state == State.Withdrawing, "request a withdrawal first");
        require(block.timestamp >= d.claimableAt, "the withdrawal delay is not over");
        d.state = State.Closed;
        amount = (d.slashed ? 0 : uint256(d.doubleSpendStake)) + (d.policyBurned ? 0 : uint256(d.policyStake));
        emit Withdrawn(idCommitment, msg.sender, amount);
        (bool ok, ) = payable(msg.sender).call{value: amount}("");
        require(ok, "paying the owner failed");
    }

    /// A deposit's record (state None if there is none).
    function depositOf(uint256 idCommitment) external view returns (Deposit memory) {
        return deposits[idCommitment];
    }

    /// Whether tickets proved against `candidate` are acceptable now.
    function isKnownRoot(uint256 candidate) external view returns (bool) {
        if (candidate == root) {
            return true;
        }
        uint64 replaced = replacedAt[candidate];
        return replaced != 0 && uint256(replaced) + rootValidity > block.timestamp;
    }

    /// Sets leaf `index` and the nodes above it; the new root replaces the
    /// old one.
    function _setLeaf(uint32 index, uint256 leaf) internal {
        uint256 position = index;
        uint256 node = leaf;
        uint256 filled = nextIndex;
        nodes[position] = node;
        for (uint256 level = 0; level < DEPTH; level++) {
            uint256 sibling = position ^ 1;
            // Positions at this level that cover a leaf handed out so far;
            // those beyond are empty subtrees.
            uint256 width = (filled + (1 << level) - 1) >> level;
            uint256 other = sibling < width ? nodes[(level << 32) | sibling] : zeros[level];
            node = position & 1 == 0 ? PoseidonT3.hash([node, other]) : PoseidonT3.hash([other, node]);
            position >>= 1;
            if (level + 1 < DEPTH) {
                nodes[((level + 1) << 32) | position] = node;
            }
        }
        uint256 previous = root;
        if (node != previous) {
            replacedAt[previous] = uint64(block.timestamp);
            root = node;
            emit RootChanged(node, previous);
        }
    }
}
