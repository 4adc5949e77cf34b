//! Virtual switches and bonds, as the admin API uses them: the engine's view of the
//! backend's network, so handlers never hold the network manager themselves.

use vmm_backend::net::{BondMode, BondRequest, BondSpec, BondStatus, SwitchInfo, SwitchRequest};

use super::{App, EngineError};

impl App {
    pub fn list_switches(&self) -> Result<Vec<SwitchInfo>, EngineError> {
        Ok(self.backend.network().list_switches()?)
    }

    pub fn get_switch(&self, name: &str) -> Result<SwitchInfo, EngineError> {
        Ok(self.backend.network().get_switch(name)?)
    }

    pub async fn create_switch(&self, req: SwitchRequest) -> Result<SwitchInfo, EngineError> {
        Ok(self.backend.network().create_switch(req).await?)
    }

    pub async fn delete_switch(&self, name: &str) -> Result<(), EngineError> {
        Ok(self.backend.network().delete_switch(name).await?)
    }

    pub fn list_bonds(&self) -> Result<Vec<BondSpec>, EngineError> {
        Ok(self.backend.network().list_bonds()?)
    }

    pub async fn create_bond(&self, req: BondRequest) -> Result<BondSpec, EngineError> {
        Ok(self.backend.network().create_bond(req).await?)
    }

    pub async fn bond_status(&self, name: &str) -> Result<BondStatus, EngineError> {
        Ok(self.backend.network().bond_status(name).await?)
    }

    pub async fn set_bond_mode(&self, name: &str, mode: BondMode) -> Result<BondSpec, EngineError> {
        Ok(self.backend.network().set_bond_mode(name, mode).await?)
    }

    pub async fn delete_bond(&self, name: &str) -> Result<(), EngineError> {
        Ok(self.backend.network().delete_bond(name).await?)
    }
}
