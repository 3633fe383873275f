"""Token-level PPO-Clip and KLip gates on a toy counting problem, in pure JAX on CPU.

A small autoregressive policy learns to count: given a prompt digit ``p`` it must
write ``p+1, p+2, ...`` (mod 8) for ``2 + p % 5`` tokens and then an end token.
Sequences stop at the end token, so a batch is padded and carries a mask; each prompt
is sampled ``GROUP`` times and the advantage of a sequence is its reward normalised
within its group (GRPO). Every update trains on the fresh rollout and on the previous
one (policy age 1 in updates), with a few full-batch Adam steps, the token-mean loss
and a small entropy bonus.

Four losses, one compiled program (the variants are vmapped, as a sweep would be):

- ``ppo_clip`` with clip-higher (``clip_eps`` 0.2, ``clip_eps_high`` 0.28);
- ``klip`` with the step gate and the same band: same gradient, so the same run;
- ``klip`` with the paper's sigmoid soft gate (softness 0.05);
- ``klip`` with an age-conditioned gate: the soft gate moves 0.1 inside the band for
  tokens from the previous rollout (``context=`` is each token's policy age).

Run ``python examples/token_level.py [--out examples/token_level.png]`` (about a
minute on a 2-core CPU); it prints the final numbers and writes a plot of the reward
and the kill fraction. One seed: the gaps between the gates are not a finding.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from klipjax import losses
from klipjax import token_losses as tl

DIGITS = 8
END = DIGITS  # the end token; the vocabulary is the digits and END
START = DIGITS + 1  # input-only "previous token" of the first position
VOCAB = DIGITS + 1
TOKENS = 8
PROMPTS, GROUP = 16, 8
HIDDEN = 64
STEPS_PER_UPDATE = 4
LEARNING_RATE = 3e-3
CLIP_EPS, CLIP_EPS_HIGH = 0.2, 0.28
SOFTNESS, AGE_SHIFT = 0.05, 0.1
ENTROPY_COEF = 0.01

VARIANTS = (
    "ppo_clip (clip-higher)",
    "klip, step gate",
    "klip, sigmoid gate",
    "klip, age-conditioned gate",
)


@losses.SampleGate
def age_gate(inputs):
    # Tokens the policy has already moved away from meet a tighter trust region: the
    # sigmoid gate's midpoint sits AGE_SHIFT inside the band per update of age.
    logit = (inputs.distance + AGE_SHIFT * inputs.context) / SOFTNESS
    return jax.nn.sigmoid(jnp.clip(logit, -60.0, 60.0))


def per_token_loss(variant, log_prob, old_log_prob, advantage, age):
    """The variant's per-token loss, selected by a traced index."""
    band = {"clip_eps": CLIP_EPS, "clip_eps_high": CLIP_EPS_HIGH}
    data = (log_prob, old_log_prob, advantage)
    branches = [
        lambda: losses.ppo_clip(*data, **band),
        lambda: losses.klip(*data, **band),
        lambda: losses.klip(*data, **band, gate="sigmoid", softness=SOFTNESS),
        lambda: losses.klip(*data, **band, gate=age_gate, context=age),
    ]
    return jax.lax.switch(variant, branches)


def targets(prompt):
    """The tokens to write for each prompt: ``[prompts, TOKENS]`` and the lengths."""
    length = 2 + prompt % 5
    position = jnp.arange(TOKENS)
    digits = (prompt[:, None] + 1 + position) % DIGITS
    return jnp.where(position < length[:, None], digits, END), length


def init_params(key):
    inputs = DIGITS + (DIGITS + 2) + TOKENS  # prompt, previous token, position
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (inputs, HIDDEN)) / np.sqrt(inputs),
        "b1": jnp.zeros(HIDDEN),
        "w2": 0.01 * jax.random.normal(k2, (HIDDEN, VOCAB)),
        "b2": jnp.zeros(VOCAB),
    }


def logits_of(params, prompt, previous, position):
    features = jnp.concatenate(
        [
            jax.nn.one_hot(prompt, DIGITS),
            jax.nn.one_hot(previous, DIGITS + 2),
            jax.nn.one_hot(position, TOKENS),
        ],
        axis=-1,
    )
    hidden = jnp.tanh(features @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def token_log_probs(params, prompt, tokens):
    """Teacher-forced ``log pi(token_t | prompt, token_{t-1}, t)`` and the policy's
    entropy at each position: both ``[n, TOKENS]``."""
    n = tokens.shape[0]
    previous = jnp.concatenate([jnp.full((n, 1), START), tokens[:, :-1]], axis=1)
    position = jnp.broadcast_to(jnp.arange(TOKENS), (n, TOKENS))
    prompts = jnp.broadcast_to(prompt[:, None], (n, TOKENS))
    logits = logits_of(params, prompts, previous, position)
    log_p = jax.nn.log_softmax(logits)
    entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    return jnp.take_along_axis(log_p, tokens[..., None], axis=-1)[..., 0], entropy


class Rollout(NamedTuple):
    prompt: jax.Array  # [n]
    tokens: jax.Array  # [n, TOKENS]
    mask: jax.Array  # [n, TOKENS], true up to and including the end token
    old_log_prob: jax.Array  # [n, TOKENS]
    advantage: jax.Array  # [n, TOKENS]
    reward: jax.Array  # [n]
    exact: jax.Array  # [n]


def rollout(params, key):
    prompt_key, sample_key = jax.random.split(key)
    prompt = jnp.repeat(jax.random.randint(prompt_key, (PROMPTS,), 0, DIGITS), GROUP)

    def step(carry, inputs):
        previous, ended = carry
        position, key = inputs
        logits = logits_of(params, prompt, previous, jnp.full_like(prompt, position))
        token = jax.random.categorical(key, logits)
        # After the end token the sequence is padding: keep writing END there.
        token = jnp.where(ended, END, token)
        return (token, ended | (token == END)), (token, ~ended)

    n = prompt.shape[0]
    start = (jnp.full((n,), START), jnp.zeros((n,), bool))
    keys = jax.random.split(sample_key, TOKENS)
    _, (tokens, mask) = jax.lax.scan(step, start, (jnp.arange(TOKENS), keys))
    tokens, mask = tokens.T, mask.T
    target, length = targets(prompt)
    correct = (tokens == target) & (jnp.arange(TOKENS) < length[:, None])
    prefix = jnp.sum(jnp.cumprod(correct, axis=1), axis=1)
    exact = jnp.all(tokens == target, axis=1)  # the digits, END, then padding
    reward = prefix / length + exact
    grouped = reward.reshape(PROMPTS, GROUP)
    normalised = (grouped - grouped.mean(1, keepdims=True)) / (
        grouped.std(1, keepdims=True) + 1e-6
    )
    advantage = jnp.broadcast_to(normalised.reshape(n, 1), (n, TOKENS))
    old_log_prob, _ = token_log_probs(params, prompt, tokens)
    return Rollout(prompt, tokens, mask, old_log_prob, advantage, reward, exact)


def concat(a: Rollout, b: Rollout) -> Rollout:
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y]), a, b)


def train(variant, key, updates):
    """One run of ``updates`` updates; returns per-update metrics and the params."""
    optimizer = optax.adam(LEARNING_RATE)
    init_key, first_key, run_key = jax.random.split(key, 3)
    params = init_params(init_key)
    previous = rollout(params, first_key)
    n = previous.prompt.shape[0]
    age = jnp.concatenate([jnp.zeros((n, TOKENS)), jnp.ones((n, TOKENS))])

    def objective(params, batch):
        log_prob, entropy = token_log_probs(params, batch.prompt, batch.tokens)
        per_token = per_token_loss(
            variant, log_prob, batch.old_log_prob, batch.advantage, age
        )
        # A small entropy bonus: a group whose samples all agree has zero advantage
        # and would never leave a wrong answer otherwise.
        per_token = per_token - ENTROPY_COEF * entropy
        loss = tl.aggregate(per_token, batch.mask, mode="token_mean")
        kill = losses.partition_fractions(
            log_prob,
            batch.old_log_prob,
            batch.advantage,
            clip_eps=CLIP_EPS,
            clip_eps_high=CLIP_EPS_HIGH,
            mask=batch.mask,
        ).kill
        return loss, kill

    def gradient_step(carry, _):
        params, opt_state, batch = carry
        (_, kill), grads = jax.value_and_grad(objective, has_aux=True)(params, batch)
        updates_, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(params, updates_), opt_state, batch), kill

    def update(carry, key):
        params, opt_state, previous = carry
        fresh = rollout(params, key)
        batch = concat(fresh, previous)
        (params, opt_state, _), kill = jax.lax.scan(
            gradient_step, (params, opt_state, batch), None, STEPS_PER_UPDATE
        )
        metrics = {
            "reward": fresh.reward.mean(),
            "exact": fresh.exact.mean(),
            "kill_fraction": kill.mean(),
        }
        return (params, opt_state, fresh), metrics

    carry = (params, optimizer.init(params), previous)
    (params, _, _), metrics = jax.lax.scan(
        update, carry, jax.random.split(run_key, updates)
    )
    return metrics, params


def plot(metrics, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    styles = ["-", "--", "-", "-"]
    for i, name in enumerate(VARIANTS):
        for axis, key in ((left, "reward"), (right, "kill_fraction")):
            series = np.convolve(metrics[key][i], np.ones(20) / 20, mode="valid")
            axis.plot(series, styles[i], label=name, linewidth=1.4)
    left.set(xlabel="update", ylabel="mean reward (max 2)", title="reward")
    right.set(xlabel="update", ylabel="fraction of tokens", title="I_kill (masked)")
    left.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples/token_level.png"))
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    run_all = jax.jit(
        jax.vmap(lambda v, k: train(v, k, args.updates), in_axes=(0, None))
    )
    metrics, params = run_all(jnp.arange(len(VARIANTS)), jax.random.key(args.seed))
    metrics = jax.tree.map(np.asarray, metrics)
    seconds = time.perf_counter() - start

    tail = max(1, args.updates // 10)
    print(f"{args.updates} updates x {len(VARIANTS)} losses in {seconds:.1f} s")
    print("reward (max 2) and exact-answer rate: mean of the last 10% of updates;")
    print("kill: mean fraction of valid tokens in I_kill over all gradient steps")
    print(f"{'loss':28s} {'reward':>7s} {'exact':>6s} {'kill':>7s}")
    for i, name in enumerate(VARIANTS):
        reward = metrics["reward"][i, -tail:].mean()
        exact = metrics["exact"][i, -tail:].mean()
        kill = metrics["kill_fraction"][i].mean()
        print(f"{name:28s} {reward:7.3f} {exact:6.3f} {kill:7.4f}")
    gap = max(float(np.max(np.abs(x[0] - x[1]))) for x in jax.tree.leaves(params))
    print(f"max |params(ppo_clip) - params(klip, step)| = {gap}")
    plot(metrics, args.out)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
