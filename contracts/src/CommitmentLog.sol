// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {PoseidonT2} from "poseidon-solidity/PoseidonT2.sol";
import {PoseidonT3} from "poseidon-solidity/PoseidonT3.sol";
import {CreditRegistry} from "./CreditRegistry.sol";

/// @title The design funion did not take, kept to measure it
/// @notice The same deposits, slashes, burns and withdrawals as
/// CreditRegistry, but without the tree: the contract only logs rate
/// commitments and removals, and indexers rebuild the tree and its roots
/// from the events. Nothing deploys it outside `registry_gas`, which
/// compares the gas of both designs.
contract CommitmentLog {
    uint256 internal constant FIELD =
        21888242871839275222246405745257275088548364400416034343698204186575808495617;

    // The registry's own record, so both store exactly the same per deposit.
    using {isLive} for CreditRegistry.State;

    uint256 public immutable stakePerTicket;
    uint256 public immutable minPolicyStake;
    uint64 public immutable withdrawDelay;
    address public immutable policy;

    mapping(uint256 => CreditRegistry.Deposit) internal deposits;
    mapping(bytes32 => uint256) public slashCommits;
    uint32 public nextIndex;
    uint256 public burned;

    /// A leaf was appended at `index`.
    event LeafAppended(uint256 indexed idCommitment, address indexed owner, uint32 index, uint256 rateCommitment);
    /// Leaf `index` is to be zeroed by the indexers.
    event LeafRemoved(uint32 index);
    event SlashCommitted(bytes32 indexed commitment, address indexed revealer);
    event Slashed(uint256 indexed idCommitment, address indexed revealer, uint256 paid);
    event PolicyBurned(uint256 indexed idCommitment, bytes32 evidenceHash, uint256 amount);
    event Withdrawn(uint256 indexed idCommitment, address indexed owner, uint256 amount);

    constructor(uint256 stakePerTicket_, uint256 minPolicyStake_, uint64 withdrawDelay_, address policy_) {
        stakePerTicket = stakePerTicket_;
        minPolicyStake = minPolicyStake_;
        withdrawDelay = withdrawDelay_;
        policy = policy_;
    }

    function deposit(uint256 idCommitment, uint32 limit) external payable returns (uint32 index) {
        require(idCommitment < FIELD && limit > 0, "bad deposit");
        require(deposits[idCommitment].state == CreditRegistry.State.None, "this identity already deposited");
        uint256 d = uint256(limit) * stakePerTicket;
        require(msg.value >= d + minPolicyStake, "pay limit x stakePerTicket plus the policy stake");
        index = nextIndex++;
        // The limit is still bound into the leaf on chain, as in the registry.
        uint256 leaf = PoseidonT3.hash([idCommitment, uint256(limit)]);
        deposits[idCommitment] = CreditRegistry.Deposit(
            msg.sender, index, limit, CreditRegistry.State.Active, false, false, 0, uint128(d), uint128(msg.value - d)
        );
        emit LeafAppended(idCommitment, msg.sender, index, leaf);
    }

    function commitSlash(bytes32 commitment) external {
        require(slashCommits[commitment] == 0, "already committed");
        slashCommits[commitment] = block.number;
        emit SlashCommitted(commitment, msg.sender);
    }

    function revealSlash(uint256 secret) external returns (uint256 paid) {
        bytes32 commitment = keccak256(abi.encode(secret, msg.sender));
        uint256 committedAt = slashCommits[commitment];
        require(committedAt != 0 && committedAt < block.number, "commit first, in an earlier block");
        delete slashCommits[commitment];
        uint256 idCommitment = PoseidonT2.hash([secret]);
        CreditRegistry.Deposit storage d = deposits[idCommitment];
        require(d.state.isLive(), "no live deposit has this secret");
        require(!d.slashed, "already slashed");
        d.slashed = true;
        paid = d.doubleSpendStake;
        emit Slashed(idCommitment, msg.sender, paid);
        if (d.state == CreditRegistry.State.Active) {
            emit LeafRemoved(d.index);
        }
        (bool ok, ) = payable(msg.sender).call{value: paid}("");
        require(ok, "paying the revealer failed");
    }

    function burn(uint256 idCommitment, bytes32 evidenceHash) external {
        require(msg.sender == policy && evidenceHash != bytes32(0), "only the policy address burns, with evidence");
        CreditRegistry.Deposit storage d = deposits[idCommitment];
        require(d.state.isLive() && !d.policyBurned, "nothing to burn");
        d.policyBurned = true;
        burned += d.policyStake;
        emit PolicyBurned(idCommitment, evidenceHash, d.policyStake);
    }

    function requestWithdraw(uint256 idCommitment) external {
        CreditRegistry.Deposit storage d = deposits[idCommitment];
        require(d.owner == msg.sender && d.state == CreditRegistry.State.Active, "only the owner withdraws, once");
        d.state = CreditRegistry.State.Withdrawing;
        d.claimableAt = uint64(block.timestamp) + withdrawDelay;
        if (!d.slashed) {
            emit LeafRemoved(d.index);
        }
    }

    function claim(uint256 idCommitment) external returns (uint256 amount) {
        CreditRegistry.Deposit storage d = deposits[idCommitment];
        require(
            d.owner == msg.sender && d.state == CreditRegistry.State.Withdrawing && block.timestamp >= d.claimableAt,
            "not claimable"
        );
        d.state = CreditRegistry.State.Closed;
        amount = (d.slashed ? 0 : uint256(d.doubleSpendStake)) + (d.policyBurned ? 0 : uint256(d.policyStake));
        emit Withdrawn(idCommitment, msg.sender, amount);
        (bool ok, ) = payable(msg.sender).call{value: amount}("");
        require(ok, "paying the owner failed");
    }
}

/// Active or withdrawing: stakes still held, slashing still possible.
function isLive(CreditRegistry.State state) pure returns (bool) {
    return state == CreditRegistry.State.Active || state == CreditRegistry.State.Withdrawing;
}
