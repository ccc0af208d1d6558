//! `--fault-on`'s selectors: which connections get the faults, by their number (the count of
//! connections accepted, 1 for the first) and by their source. Parsed by `cli::values`, held in
//! `faults::Faults`, read by each child for its own connection (`Faults::applies`).

use std::fmt;

use crate::network::in_network;

/// The most `--fault-on` selectors.
pub const MAX_SELECTORS: usize = 8;

/// `--fault-on SELECTOR[,SELECTOR...]`: which connections get the faults. A connection is chosen
/// when it matches one of the number selectors (if any are given) and one of the `from:`
/// selectors (if any are given); `--fault-rate` then decides among the chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selectors {
    items: [Option<Selector>; MAX_SELECTORS],
}

/// One `--fault-on` selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// `first:N`: connections 1 to N.
    First(u32),
    /// `after:N`: every connection after the Nth.
    After(u32),
    /// `every:K`: connections K, 2K, 3K, ...
    Every(u32),
    /// `conn:A-B` (or `conn:A`): connections A to B.
    Range(u32, u32),
    /// `from:ADDR[/LEN]`: connections from that network (by the PROXY header's address, if one
    /// came).
    From(std::net::IpAddr, u8),
}

impl Selectors {
    /// The selectors, in order; an error past `MAX_SELECTORS`.
    pub fn new(list: &[Selector]) -> Result<Selectors, String> {
        if list.len() > MAX_SELECTORS {
            return Err(format!("at most {MAX_SELECTORS} selectors"));
        }
        let mut items = [None; MAX_SELECTORS];
        for (slot, selector) in items.iter_mut().zip(list) {
            *slot = Some(*selector);
        }
        Ok(Selectors { items })
    }

    fn iter(&self) -> impl Iterator<Item = Selector> + '_ {
        self.items.iter().flatten().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.items[0].is_none()
    }

    /// Whether connection number `serial`, from `peer` (None: a Unix client), is chosen.
    pub fn choose(&self, serial: u32, peer: Option<std::net::IpAddr>) -> bool {
        let (mut numbers, mut number_hit, mut sources, mut source_hit) = (0, false, 0, false);
        for selector in self.iter() {
            let hit = match selector {
                Selector::First(n) => serial <= n,
                Selector::After(n) => serial > n,
                Selector::Every(k) => serial.is_multiple_of(k),
                Selector::Range(a, b) => (a..=b).contains(&serial),
                Selector::From(net, len) => {
                    sources += 1;
                    source_hit |= peer.is_some_and(|ip| in_network(ip, net, len));
                    continue;
                }
            };
            numbers += 1;
            number_hit |= hit;
        }
        (numbers == 0 || number_hit) && (sources == 0 || source_hit)
    }
}

impl fmt::Display for Selectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, selector) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match selector {
                Selector::First(n) => write!(f, "first:{n}")?,
                Selector::After(n) => write!(f, "after:{n}")?,
                Selector::Every(k) => write!(f, "every:{k}")?,
                Selector::Range(a, b) => write!(f, "conn:{a}-{b}")?,
                Selector::From(net, len) => write!(f, "from:{net}/{len}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_choose_by_number_and_by_source() {
        use std::net::IpAddr;
        let on = |list: &[Selector]| Selectors::new(list).unwrap();
        let local: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        let chosen =
            |s: Selectors| -> Vec<u32> { (1..=10).filter(|&n| s.choose(n, local)).collect() };
        assert_eq!(chosen(on(&[Selector::First(2)])), [1, 2]);
        assert_eq!(chosen(on(&[Selector::After(8)])), [9, 10]);
        assert_eq!(chosen(on(&[Selector::Every(3)])), [3, 6, 9]);
        assert_eq!(
            chosen(on(&[Selector::Range(4, 5), Selector::First(1)])),
            [1, 4, 5]
        );
        let net: IpAddr = "127.0.0.0".parse().unwrap();
        let other: IpAddr = "10.0.0.0".parse().unwrap();
        assert_eq!(chosen(on(&[Selector::From(net, 8)])).len(), 10);
        assert!(chosen(on(&[Selector::From(other, 8)])).is_empty());
        assert_eq!(
            chosen(on(&[Selector::First(3), Selector::From(net, 8)])),
            [1, 2, 3]
        );
        assert!(
            !on(&[Selector::From(net, 8)]).choose(1, None),
            "a Unix client has no address"
        );
        assert_eq!(chosen(Selectors::default()).len(), 10);
        assert!(Selectors::new(&[Selector::First(1); 9]).is_err());
        let text = on(&[
            Selector::First(2),
            Selector::Range(4, 5),
            Selector::From(net, 8),
        ]);
        assert_eq!(text.to_string(), "first:2,conn:4-5,from:127.0.0.0/8");
    }
}
