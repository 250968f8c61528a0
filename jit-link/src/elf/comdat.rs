//! COMDAT groups: their members' global definitions are weak, as in LLVM JITLink.
//!
//! A group's members are all kept or all dropped by a static linker; here each global
//! definition in a member section becomes weak, the session keeps the first and discards
//! the others (the layer turns a discarded one external), and dead-stripping then drops the
//! loser's blocks that nothing else reaches.

use object::elf;
use object::read::elf::SectionHeader;

use super::file::Builder;
use crate::LinkError;

impl Builder<'_> {
    /// Marks every section named by a COMDAT group.
    pub(super) fn comdat_groups(&mut self) -> Result<(), LinkError> {
        for (index, sh) in self.sections.enumerate() {
            let group = sh
                .group(self.endian, self.data)
                .map_err(|e| self.malformed(format!("group section {}: {e}", self.section_name(index.0))))?;
            let Some((flags, members)) = group else {
                continue;
            };
            if flags.0 & elf::GRP_COMDAT.0 == 0 {
                continue;
            }
            for member in members {
                let m = member.get(self.endian) as usize;
                match self.in_comdat.get_mut(m) {
                    Some(slot) => *slot = true,
                    None => {
                        return Err(self.malformed(format!(
                            "group section {} names section #{m}, which does not exist",
                            self.section_name(index.0)
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
