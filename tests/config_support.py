"""The TOML names of the node configuration's fields (README.md, Configuration), per section, shared
by the config fuzz tests and the README completeness test."""
from katzenpost import config

SECTION_FIELDS = {
    "Server": ["Identifier", "Addresses", "AltAddresses", "OnlyAdvertiseAltAddresses", "DataDir",
               "IsProvider"],
    "Logging": ["Disable", "File", "Level"],
    "PKI": ["Nonvoting", "Voting"],
    "Management": ["Enable", "Path"],
    "Debug": [*config.DEBUG_INT_KNOBS, *config.DEBUG_BOOLS, "EpochPeriod"],
    "Provider": ["EnableUserRegistrationHTTP", "UserRegistrationHTTPAddresses",
                 "AdvertiseUserRegistrationHTTPAddresses", "SQLDB", "UserDB", "SpoolDB",
                 "BinaryRecipients", "CaseSensitiveRecipients", "RecipientDelimiter", "Kaetzchen",
                 "CBORPluginKaetzchen", "EnableEphemeralClients", "TrustOnFirstUse"],
}
# Fields of the sub-tables.
PKI_NESTED_FIELDS = ["Address", "PublicKey", "Peers", "Addresses", "IdentityPublicKey", "LinkPublicKey"]
PROVIDER_NESTED_FIELDS = ["Backend", "Bolt", "Extern", "UserDB", "SpoolDB", "ProviderURL",
                          "DataSourceName", "Capability", "Endpoint", "Config", "Disable", "Command",
                          "MaxConcurrency"]
NESTED_FIELDS = PKI_NESTED_FIELDS + PROVIDER_NESTED_FIELDS
