//! Which process this is among how many: from the launcher's environment (torchrun, SLURM,
//! OpenMPI) or given explicitly.

use crate::Error;

/// The most processes a sharded checkpoint may have.
pub const MAX_WORLD_SIZE: usize = 1 << 16;

/// This process's rank and the number of processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranks {
    /// 0-based; rank 0 coordinates the commit.
    pub rank: usize,
    /// The number of processes.
    pub world_size: usize,
}

impl Ranks {
    /// Explicit ranks.
    ///
    /// # Errors
    ///
    /// [`Error::BadLocation`] unless `rank < world_size ≤ 65,536`.
    pub fn new(rank: usize, world_size: usize) -> Result<Self, Error> {
        if world_size == 0 || world_size > MAX_WORLD_SIZE || rank >= world_size {
            return Err(Error::BadLocation {
                location: format!("rank {rank} of {world_size}"),
                reason: format!(
                    "a rank must be below the world size, and the world size 1 to {MAX_WORLD_SIZE}"
                ),
            });
        }
        Ok(Ranks { rank, world_size })
    }

    /// One process.
    pub fn single() -> Self {
        Ranks {
            rank: 0,
            world_size: 1,
        }
    }

    /// The ranks a launcher set: `RANK`/`WORLD_SIZE` (torchrun), `SLURM_PROCID`/
    /// `SLURM_NTASKS` (srun), `OMPI_COMM_WORLD_RANK`/`OMPI_COMM_WORLD_SIZE` (mpirun), in
    /// that order; `None` when none is set.
    ///
    /// # Errors
    ///
    /// [`Error::BadLocation`] naming the variables when a pair is malformed or inconsistent.
    pub fn from_env() -> Result<Option<Self>, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, Error> {
        for (rank, size) in [
            ("RANK", "WORLD_SIZE"),
            ("SLURM_PROCID", "SLURM_NTASKS"),
            ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ] {
            let (Some(r), Some(s)) = (var(rank), var(size)) else {
                continue;
            };
            let parse = |name: &str, text: &str| {
                text.trim()
                    .parse::<usize>()
                    .map_err(|_| Error::BadLocation {
                        location: format!("{name}={}", crate::text::shorten(text, 40)),
                        reason: "not a whole number".to_owned(),
                    })
            };
            return Self::new(parse(rank, &r)?, parse(size, &s)?).map(Some);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launchers_are_read_in_order_and_checked() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Ranks::from_vars(env(&[("RANK", "1"), ("WORLD_SIZE", "4")])).unwrap(),
            Some(Ranks {
                rank: 1,
                world_size: 4
            })
        );
        assert_eq!(
            Ranks::from_vars(env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")])).unwrap(),
            Some(Ranks {
                rank: 0,
                world_size: 2
            })
        );
        assert_eq!(Ranks::from_vars(env(&[])).unwrap(), None);
        assert!(Ranks::from_vars(env(&[("RANK", "4"), ("WORLD_SIZE", "4")])).is_err());
        assert!(Ranks::from_vars(env(&[("RANK", "x"), ("WORLD_SIZE", "4")])).is_err());
        assert!(Ranks::new(0, MAX_WORLD_SIZE + 1).is_err());
    }
}
