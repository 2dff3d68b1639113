//! The tape: nodes, the `Backward` trait every op implements, and the reverse walk.

use super::{pool, slice, Tensor};

/// Handle to a node of a [`Graph`]. Only meaningful for the graph that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(pub(crate) usize);

impl Var {
    /// Position of the node on the tape.
    pub fn index(self) -> usize {
        self.0
    }
}

/// Read-only view of the tape handed to an op's backward: the op's inputs and output values,
/// and which inputs want a gradient.
pub struct GradCtx<'a> {
    nodes: &'a [Node],
    inputs: &'a [Var],
    out: usize,
}

impl GradCtx<'_> {
    /// Value of the `i`-th input of the op.
    pub fn input(&self, i: usize) -> &Tensor {
        &self.nodes[self.inputs[i].0].value
    }

    /// Whether the `i`-th input needs a gradient; ops skip the work for those that do not.
    pub fn needs(&self, i: usize) -> bool {
        self.nodes[self.inputs[i].0].requires_grad
    }

    /// Value the op produced in the forward pass.
    pub fn output(&self) -> &Tensor {
        &self.nodes[self.out].value
    }
}

/// The backward half of an op. The forward half is a `Graph` method that computes the value
/// and pushes the op struct (holding whatever it saved) onto the tape.
pub trait Backward {
    /// Given d(loss)/d(output), returns d(loss)/d(input) for each input, in input order, with
    /// `None` for inputs where `ctx.needs(i)` is false. The gradient is passed by value so
    /// elementwise ops can reuse its buffer.
    fn backward(&self, out_grad: Tensor, ctx: &GradCtx<'_>) -> Vec<Option<Tensor>>;
}

pub(crate) struct Node {
    pub(crate) value: Tensor,
    grad: Option<Tensor>,
    pub(crate) requires_grad: bool,
    retain_grad: bool,
    inputs: Vec<Var>,
    op: Option<Box<dyn Backward>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let empty = || Tensor::zeros(ndarray::IxDyn(&[0]));
        pool::give_tensor(std::mem::replace(&mut self.value, empty()));
        if let Some(g) = self.grad.take() {
            pool::give_tensor(g);
        }
    }
}

/// A tape of tensor operations. Build a fresh graph each step (or call [`Graph::clear`]);
/// dropping it returns its large buffers to a per-thread cache for the next step.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<Node>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of nodes on the tape.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Drops every node, keeping the tape's allocation.
    pub fn clear(&mut self) {
        self.nodes.clear();
    }

    /// Inserts an input or parameter. Leaves that require grad keep their gradient after
    /// [`Graph::backward`].
    pub fn leaf(&mut self, t: Tensor, requires_grad: bool) -> Var {
        self.nodes.push(Node {
            value: super::standard(t),
            grad: None,
            requires_grad,
            retain_grad: requires_grad,
            inputs: Vec::new(),
            op: None,
        });
        Var(self.nodes.len() - 1)
    }

    /// One leaf per tensor (parameters inserted for a step), all with `requires_grad`.
    pub fn leaves(&mut self, ts: &[Tensor], requires_grad: bool) -> Vec<Var> {
        ts.iter()
            .map(|t| self.leaf(t.clone(), requires_grad))
            .collect()
    }

    /// The gradients of `vars` after `backward`, moved out, a zero tensor shaped like
    /// `like[i]` where there is none (a leaf that took no part or needs no gradient).
    pub fn grads_or_zeros(&mut self, vars: &[Var], like: &[Tensor]) -> Vec<Tensor> {
        vars.iter()
            .zip(like)
            .map(|(&v, t)| {
                self.take_grad(v)
                    .unwrap_or_else(|| Tensor::zeros(t.raw_dim()))
            })
            .collect()
    }

    /// A leaf that does not require grad (data, targets).
    pub fn constant(&mut self, t: Tensor) -> Var {
        self.leaf(t, false)
    }

    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    pub fn shape(&self, v: Var) -> &[usize] {
        self.nodes[v.0].value.shape()
    }

    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// Gradient of the last `backward` w.r.t. `v`. Kept for leaves that require grad and for
    /// nodes marked with [`Graph::retain_grad`]; intermediate gradients are freed as soon as
    /// they have been propagated.
    pub fn grad(&self, v: Var) -> Option<&Tensor> {
        self.nodes[v.0].grad.as_ref()
    }

    /// Moves the gradient out of the graph (no copy).
    pub fn take_grad(&mut self, v: Var) -> Option<Tensor> {
        self.nodes[v.0].grad.take()
    }

    /// Keeps the gradient of an intermediate node after `backward` (for inspection).
    pub fn retain_grad(&mut self, v: Var) {
        self.nodes[v.0].retain_grad = true;
    }

    /// Appends an op's output: how every op (including ones defined outside this crate) enters
    /// the tape. `value` must be in standard layout. The op is only stored if some input
    /// requires grad, so a graph built from non-grad leaves (evaluation) keeps no backward
    /// state at all.
    pub fn push(&mut self, value: Tensor, inputs: &[Var], op: impl Backward + 'static) -> Var {
        let requires_grad = inputs.iter().any(|v| self.nodes[v.0].requires_grad);
        debug_assert!(value.is_standard_layout());
        self.nodes.push(Node {
            value,
            grad: None,
            requires_grad,
            retain_grad: false,
            inputs: if requires_grad {
                inputs.to_vec()
            } else {
                Vec::new()
            },
            op: if requires_grad {
                Some(Box::new(op))
            } else {
                None
            },
        });
        Var(self.nodes.len() - 1)
    }

    /// Back-propagates from `loss`, which must hold exactly one element. Walks the tape in
    /// reverse (the tape order is topological), skipping nodes that need no gradient; gradients
    /// are accumulated (summed) where a node feeds several ops. Each op's saved state is freed
    /// once used, so `backward` runs once per graph.
    ///
    /// # Panics
    /// If `loss` does not hold exactly one element.
    pub fn backward(&mut self, loss: Var) {
        let n = self.nodes[loss.0].value.len();
        assert_eq!(n, 1, "backward: loss must hold one element, has {n}");
        if !self.nodes[loss.0].requires_grad {
            return;
        }
        let seed = Tensor::ones(self.nodes[loss.0].value.raw_dim());
        accumulate(&mut self.nodes[loss.0].grad, seed);
        for i in (0..=loss.0).rev() {
            if self.nodes[i].op.is_none() || self.nodes[i].grad.is_none() {
                continue;
            }
            let out_grad = if self.nodes[i].retain_grad {
                self.nodes[i].grad.clone()
            } else {
                self.nodes[i].grad.take()
            }
            .expect("checked above");
            let op = self.nodes[i].op.take().expect("checked above");
            let inputs = std::mem::take(&mut self.nodes[i].inputs);
            let grads = {
                let ctx = GradCtx {
                    nodes: &self.nodes,
                    inputs: &inputs,
                    out: i,
                };
                op.backward(out_grad, &ctx)
            };
            drop(op);
            assert_eq!(
                grads.len(),
                inputs.len(),
                "op returned the wrong number of gradients"
            );
            for (v, g) in inputs.iter().zip(grads) {
                if let Some(g) = g {
                    let node = &mut self.nodes[v.0];
                    if node.requires_grad {
                        assert_eq!(g.shape(), node.value.shape(), "gradient shape mismatch");
                        accumulate(&mut node.grad, g);
                    }
                }
            }
        }
    }
}

fn accumulate(slot: &mut Option<Tensor>, g: Tensor) {
    match slot {
        None => *slot = Some(super::standard(g)),
        Some(acc) => {
            let g = super::standard(g);
            let acc = acc.as_slice_mut().expect("standard layout");
            for (a, b) in acc.iter_mut().zip(slice(&g)) {
                *a += b;
            }
            pool::give_tensor(g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::autograd::{scalar, tensor};

    #[test]
    fn leaf_grad_accumulates_over_uses() {
        // y = x*x + x  => dy/dx = 2x + 1
        let mut g = Graph::new();
        let x = g.leaf(scalar(3.0), true);
        let xx = g.mul(x, x);
        let y = g.add(xx, x);
        g.backward(y);
        assert_eq!(g.grad(x).unwrap()[[]], 7.0);
        assert!(g.grad(xx).is_none(), "intermediate grads are freed");
    }

    #[test]
    fn no_grad_for_inputs_that_do_not_need_it() {
        let mut g = Graph::new();
        let a = g.leaf(tensor(&[2], vec![1.0, 2.0]), false);
        let b = g.leaf(tensor(&[2], vec![3.0, 4.0]), true);
        let c = g.mul(a, b);
        let s = g.sum(c);
        g.backward(s);
        assert!(g.grad(a).is_none());
        assert_eq!(g.grad(b).unwrap().as_slice().unwrap(), &[1.0, 2.0]);
    }

    #[test]
    fn graph_without_grad_stores_no_ops() {
        let mut g = Graph::new();
        let a = g.constant(tensor(&[2], vec![1.0, 2.0]));
        let c = g.relu(a);
        assert!(!g.requires_grad(c));
        let s = g.sum(c);
        g.backward(s); // no-op
        assert!(g.grad(a).is_none());
    }

    #[test]
    fn retained_intermediate_grad() {
        let mut g = Graph::new();
        let x = g.leaf(tensor(&[2], vec![1.0, -2.0]), true);
        let h = g.mul(x, x);
        g.retain_grad(h);
        let s = g.sum(h);
        g.backward(s);
        assert_eq!(g.grad(h).unwrap().as_slice().unwrap(), &[1.0, 1.0]);
        assert_eq!(g.take_grad(x).unwrap().as_slice().unwrap(), &[2.0, -4.0]);
        assert!(g.grad(x).is_none());
    }

    #[test]
    #[should_panic(expected = "one element")]
    fn backward_of_non_scalar_panics() {
        let mut g = Graph::new();
        let x = g.leaf(tensor(&[2], vec![1.0, 2.0]), true);
        g.backward(x);
    }
}
