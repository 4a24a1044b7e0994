//! The moving mean of the last losses that both training stages show on their progress bars,
//! log and report at the end.

/// The last `capacity` values and their mean.
#[derive(Debug, Clone)]
pub struct LossWindow {
    values: std::collections::VecDeque<f32>,
    capacity: usize,
}

impl LossWindow {
    /// An empty window over the last `capacity` values (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            values: std::collections::VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
        }
    }

    /// Adds `value`, dropping the oldest one when the window is full.
    pub fn push(&mut self, value: f32) {
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    /// The mean of the values in the window; 0 when it is empty.
    pub fn mean(&self) -> f32 {
        self.values.iter().sum::<f32>() / self.values.len().max(1) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::LossWindow;

    /// The mean covers only the last `capacity` values: (3 + 4 + 5) / 3 = 4.
    #[test]
    fn the_mean_covers_the_last_values() {
        let mut window = LossWindow::new(3);
        assert_eq!(window.mean(), 0.0);
        for v in [1.0, 2.0, 3.0, 4.0, 5.0] {
            window.push(v);
        }
        assert_eq!(window.mean(), 4.0);
    }
}
